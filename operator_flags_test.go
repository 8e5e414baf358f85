package main

import (
	"flag"
	"io"
	"testing"

	"github.com/go-logr/logr"
)

func parseOperatorFlags(t *testing.T, args ...string) *operatorFlags {
	t.Helper()
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f operatorFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &f
}

func TestIngressFlags(t *testing.T) {
	// Defaults: the ingress-nginx namespace, and HTTPS to the backends.
	o, _, err := parseOperatorFlags(t, "-workload-image", "w").options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if o.IngressNamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "ingress-nginx" ||
		o.IngressAnnotations["nginx.ingress.kubernetes.io/backend-protocol"] != "HTTPS" {
		t.Errorf("defaults: %v %v", o.IngressNamespaceSelector, o.IngressAnnotations)
	}

	// Given values replace the defaults; a value may hold commas and '='.
	o, _, err = parseOperatorFlags(t, "-workload-image", "w",
		"-ingress-namespace-label", "team=edge",
		"-ingress-annotation", "nginx.ingress.kubernetes.io/whitelist-source-range=10.0.0.0/8,192.168.0.0/16",
		"-ingress-annotation", "example.com/expr=a=b").options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if got := o.IngressNamespaceSelector.MatchLabels; len(got) != 1 || got["team"] != "edge" {
		t.Errorf("namespace labels %v", got)
	}
	want := map[string]string{
		"nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8,192.168.0.0/16",
		"example.com/expr": "a=b",
	}
	if len(o.IngressAnnotations) != len(want) {
		t.Errorf("annotations %v, want %v", o.IngressAnnotations, want)
	}
	for k, v := range want {
		if o.IngressAnnotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, o.IngressAnnotations[k], v)
		}
	}

	if _, _, err := parseOperatorFlags(t).options(logr.Discard()); err == nil {
		t.Error("no -workload-image was accepted")
	}
}
