package charts_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

var updateReadme = flag.Bool("update", false, "rewrite the values table of the chart's README.md from values.yaml")

const (
	tableBegin = "<!-- values table: generated from values.yaml by go test ./charts -run TestChartReadme -update -->"
	tableEnd   = "<!-- end of values table -->"
)

// valueDoc is one documented value: its dotted path, default and description.
type valueDoc struct {
	path, def, desc string
}

// documentedValues walks values.yaml: a key whose comment starts with "# --" is a value (its
// whole subtree is its default); any other mapping is descended into. A leaf without such a
// comment is an error, so that no value goes undocumented.
func documentedValues(node *yaml.Node, prefix string) ([]valueDoc, []string) {
	var docs []valueDoc
	var undocumented []string
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i], node.Content[i+1]
		path := key.Value
		if prefix != "" {
			path = prefix + "." + key.Value
		}
		if desc, ok := valueComment(key.HeadComment); ok {
			docs = append(docs, valueDoc{path: path, def: defaultOf(val), desc: desc})
			continue
		}
		if val.Kind == yaml.MappingNode && len(val.Content) > 0 {
			d, u := documentedValues(val, path)
			docs, undocumented = append(docs, d...), append(undocumented, u...)
			continue
		}
		undocumented = append(undocumented, path)
	}
	return docs, undocumented
}

// valueComment extracts the description from a "# -- …" comment and its continuation lines.
func valueComment(comment string) (string, bool) {
	lines := strings.Split(comment, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "# --") {
			continue
		}
		var words []string
		for _, c := range lines[i:] {
			words = append(words, strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(c, "# --"), "#")))
		}
		return strings.Join(words, " "), true
	}
	return "", false
}

// defaultOf prints a default compactly: JSON, as `--set-json` takes it.
func defaultOf(n *yaml.Node) string {
	var v any
	if err := n.Decode(&v); err != nil {
		return "?"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// valuesTable renders the README's table of every value.
func valuesTable(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	docs, undocumented := documentedValues(doc.Content[0], "")
	if len(undocumented) > 0 {
		t.Errorf("values without a \"# --\" comment in values.yaml: %v", undocumented)
	}
	var b bytes.Buffer
	b.WriteString("| Value | Default | Description |\n|---|---|---|\n")
	for _, d := range docs {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", d.path, strings.ReplaceAll(d.def, "|", `\|`), strings.ReplaceAll(d.desc, "|", `\|`))
	}
	return b.String()
}

// TestChartReadme: the chart's README lists every value of values.yaml with its default and
// description, as generated from values.yaml's comments.
func TestChartReadme(t *testing.T) {
	path := filepath.Join(chartDir(t), "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin := bytes.Index(readme, []byte(tableBegin))
	end := bytes.Index(readme, []byte(tableEnd))
	if begin < 0 || end < begin {
		t.Fatalf("%s has no %q … %q section", path, tableBegin, tableEnd)
	}
	want := valuesTable(t)
	got := string(readme[begin+len(tableBegin)+1 : end])
	if got == want {
		return
	}
	if *updateReadme {
		out := append([]byte{}, readme[:begin+len(tableBegin)+1]...)
		out = append(out, want...)
		out = append(out, readme[end:]...)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the values table in %s is stale: run go test ./charts -run TestChartReadme -update\n--- want\n%s", path, want)
}

// TestValuesTableDocumentsEveryValue shows that an undocumented value is caught.
func TestValuesTableDocumentsEveryValue(t *testing.T) {
	var doc yaml.Node
	src := "# -- documented\na: 1\nb:\n  # -- nested\n  c: x\n  d: {}\n"
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	docs, undocumented := documentedValues(doc.Content[0], "")
	if len(docs) != 2 || docs[0].path != "a" || docs[1].path != "b.c" || docs[1].def != `"x"` {
		t.Errorf("documented %+v", docs)
	}
	if len(undocumented) != 1 || undocumented[0] != "b.d" {
		t.Errorf("undocumented %v, want [b.d]", undocumented)
	}
}
