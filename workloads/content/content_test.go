package content

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	m := Message{
		Subject: "Lab results",
		Text:    "Your results are ready.\nCall us with questions.",
		Attachments: []Attachment{
			{Name: "results.pdf", ContentType: "application/pdf", Data: []byte("%PDF-1.7 \x00\xff")},
			{ContentType: "text/plain", Data: nil},
		},
	}
	parts, err := m.Parts()
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 3 || parts[0].Name != "body" || parts[2].Name != "attachment/1" {
		t.Fatalf("part names: %+v", parts)
	}
	// Order of parts does not matter.
	got, err := Decode([]Part{parts[2], parts[0], parts[1]})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Attachments[1].Data) != 0 {
		t.Fatalf("empty attachment decoded with %d bytes", len(got.Attachments[1].Data))
	}
	got.Attachments[1].Data = nil // an empty slice decodes non-nil
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("decoded %+v, want %+v", got, m)
	}
	if !bytes.Contains(parts[1].Plaintext, m.Attachments[0].Data) {
		t.Fatal("attachment bytes are not stored raw")
	}
}

func TestDecodeRefusesMalformed(t *testing.T) {
	good, _ := Message{Text: "x", Attachments: []Attachment{{Data: []byte("a")}}}.Parts()
	for name, parts := range map[string][]Part{
		"no body":             {good[1]},
		"body not JSON":       {{Name: "body", Plaintext: []byte("{")}},
		"unknown part":        {good[0], {Name: "notes", Plaintext: nil}},
		"bad attachment name": {good[0], {Name: "attachment/x", Plaintext: good[1].Plaintext}},
		"gap in attachments":  {good[0], {Name: "attachment/1", Plaintext: good[1].Plaintext}},
		"short attachment":    {good[0], {Name: "attachment/0", Plaintext: []byte{0, 0}}},
		"header too long":     {good[0], {Name: "attachment/0", Plaintext: []byte{0, 0, 1, 0, '{', '}'}}},
	} {
		if _, err := Decode(parts); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
}
