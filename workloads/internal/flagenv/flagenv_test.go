package flagenv

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestApply(t *testing.T) {
	env := map[string]string{"APP_VAULT_ADDR": "https://vault:8200", "APP_TIMEOUT": "3s", "APP_NAME": "from-env"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	addr := fs.String("vault-addr", "", "")
	timeout := fs.Duration("timeout", time.Second, "")
	name := fs.String("name", "", "")
	if err := Apply(fs, "APP_", lookup); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"-name", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if *addr != "https://vault:8200" || *timeout != 3*time.Second || *name != "from-flag" {
		t.Fatalf("got %q %v %q", *addr, *timeout, *name)
	}

	env["APP_TIMEOUT"] = "soon"
	fs = flag.NewFlagSet("app", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Duration("timeout", time.Second, "")
	if err := Apply(fs, "APP_", lookup); err == nil || !strings.Contains(err.Error(), "APP_TIMEOUT") {
		t.Fatalf("invalid value: %v, want an error naming APP_TIMEOUT", err)
	}
}
