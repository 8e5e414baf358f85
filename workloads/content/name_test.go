package content

import (
	"strings"
	"testing"
)

func TestSafeName(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	tests := []struct {
		name, mediaType, want string
	}{
		{"a1c.pdf", "application/pdf", "a1c.pdf"},
		{"A1C.PDF", "application/pdf", "A1C.PDF"},
		{"../../etc/passwd", "application/pdf", "passwd.pdf"},
		{`C:\Users\dr\scan 1.jpeg`, "image/jpeg", "scan 1.jpeg"},
		{"scan.exe", "image/png", "scan.exe.png"},
		{"notes", "text/plain; charset=utf-8", "notes.txt"},
		{"export.csv", "application/vnd.ms-excel", "export.csv"},
		{"report.", "application/pdf", "report.pdf"},
		{"bad\x00\x1bname\r\n.txt", "text/plain", "badname.txt"},
		{"setup.exe", "application/octet-stream", "setup.exe"}, // no known extension: as sent
		{"data", "application/x-unknown", "data"},
		{"data", "not a media type", "data"},
		{"..", "application/pdf", ""},
		{".", "", ""},
		{"  ", "application/pdf", ""},
		{"", "application/pdf", ""},
		{long, "", strings.Repeat("é", 127)},
		{long + ".pdf", "application/pdf", strings.Repeat("é", 125) + ".pdf"},
		{long, "application/pdf", strings.Repeat("é", 125) + ".pdf"},
		{strings.Repeat(".", 300) + "x.pdf", "application/pdf", "attachment.pdf"},
	}
	for _, tt := range tests {
		got := SafeName(tt.name, tt.mediaType)
		if got != tt.want {
			t.Errorf("SafeName(%q, %q) = %q, want %q", tt.name, tt.mediaType, got, tt.want)
		}
		if len(got) > MaxNameBytes || strings.ContainsAny(got, `/\`) {
			t.Errorf("SafeName(%q, %q) = %q: longer than %d bytes or a path", tt.name, tt.mediaType, got, MaxNameBytes)
		}
		if again := SafeName(got, tt.mediaType); again != got {
			t.Errorf("SafeName of its own result %q changes it to %q", got, again)
		}
	}
}

func TestExtension(t *testing.T) {
	for mt, want := range map[string]string{
		"application/pdf": ".pdf", "image/jpeg": ".jpg", "text/plain; charset=utf-8": ".txt",
		"application/octet-stream": "", "": "",
	} {
		if got := Extension(mt); got != want {
			t.Errorf("Extension(%q) = %q, want %q", mt, got, want)
		}
	}
}
