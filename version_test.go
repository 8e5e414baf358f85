package main

import (
	"runtime"
	"testing"
)

func TestVersionLine(t *testing.T) {
	if got, want := versionLine(), "securetext-operator dev ("+runtime.Version()+", "+runtime.GOOS+"/"+runtime.GOARCH+")"; got != want {
		t.Errorf("unstamped: got %q, want %q", got, want)
	}
	// make stamps the release with -ldflags "-X main.version=…".
	defer func(v string) { version = v }(version)
	version = "v0.1.0-12-gabcdef0"
	if got, want := versionLine(), "securetext-operator v0.1.0-12-gabcdef0 ("+runtime.Version()+", "+runtime.GOOS+"/"+runtime.GOARCH+")"; got != want {
		t.Errorf("stamped: got %q, want %q", got, want)
	}
}
