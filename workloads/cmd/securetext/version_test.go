package main

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"testing"
)

// TestVersion: --version works as the first argument (what `docker run <image> --version`
// passes), as do -version and the version subcommand, and prints the stamped release.
func TestVersion(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = "v0.1.0-12-gabcdef0"
	want := "securetext v0.1.0-12-gabcdef0 (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	for _, arg := range []string{"--version", "-version", "version"} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{arg}, os.LookupEnv, &stdout, &stderr); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		if stdout.String() != want || stderr.Len() != 0 {
			t.Errorf("%s: stdout %q, stderr %q; want stdout %q", arg, stdout.String(), stderr.String(), want)
		}
	}
}
