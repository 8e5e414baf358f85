package main

import (
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// TestDatabaseFlags: no setting means no database peers (the renderer then opens no database
// egress); CIDRs and an in-cluster selector each become peers; a bad CIDR is refused by name.
func TestDatabaseFlags(t *testing.T) {
	o, _, err := parseOperatorFlags(t, "-workload-image", "w").options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if o.Database.Configured() || len(o.Database.Peers) != 0 {
		t.Errorf("defaults give database peers %v; want none", o.Database.Peers)
	}

	o, _, err = parseOperatorFlags(t, "-workload-image", "w", "-database-cidrs", "10.20.0.0/16, 192.0.2.10/32",
		"-database-namespace-label", "kubernetes.io/metadata.name=postgres", "-database-pod-label", "cnpg.io/cluster=tenants",
	).options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	want := []networkingv1.NetworkPolicyPeer{
		{IPBlock: &networkingv1.IPBlock{CIDR: "10.20.0.0/16"}},
		{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.10/32"}},
		{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "postgres"}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"cnpg.io/cluster": "tenants"}},
		},
	}
	if !reflect.DeepEqual(o.Database.Peers, want) {
		t.Errorf("database peers %+v, want %+v", o.Database.Peers, want)
	}

	// Pod labels alone: those pods in the tenant's own namespace (no namespace selector).
	o, _, err = parseOperatorFlags(t, "-workload-image", "w", "-database-pod-label", "app=postgres").options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Database.Peers) != 1 || o.Database.Peers[0].NamespaceSelector != nil || o.Database.Peers[0].PodSelector == nil {
		t.Errorf("pod labels alone give peers %+v", o.Database.Peers)
	}

	_, _, err = parseOperatorFlags(t, "-workload-image", "w", "-database-cidrs", "db.example.org").options(logr.Discard())
	if err == nil || !strings.Contains(err.Error(), `-database-cidrs: "db.example.org" is not a CIDR`) {
		t.Errorf("a host name as database CIDR: %v", err)
	}
}

// TestTrustedProxyFlag: the viewers trust no proxy unless told which, whatever -cluster-cidrs is.
func TestTrustedProxyFlag(t *testing.T) {
	o, _, err := parseOperatorFlags(t, "-workload-image", "w").options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if len(o.TrustedProxyCIDRs) != 0 {
		t.Errorf("default trusted proxies %v; want none", o.TrustedProxyCIDRs)
	}
	o, _, err = parseOperatorFlags(t, "-workload-image", "w", "-trusted-proxy-cidrs", "10.244.1.0/24,10.244.2.0/24").options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.TrustedProxyCIDRs, []string{"10.244.1.0/24", "10.244.2.0/24"}) {
		t.Errorf("trusted proxies %v", o.TrustedProxyCIDRs)
	}
	_, _, err = parseOperatorFlags(t, "-workload-image", "w", "-trusted-proxy-cidrs", "ingress-nginx").options(logr.Discard())
	if err == nil || !strings.Contains(err.Error(), "-trusted-proxy-cidrs") {
		t.Errorf("a name as trusted proxy: %v", err)
	}
}

// TestMetricsNamespaceFlag: no scraper is admitted until a namespace is named.
func TestMetricsNamespaceFlag(t *testing.T) {
	o, _, err := parseOperatorFlags(t, "-workload-image", "w").options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if o.MetricsNamespaceSelector != nil {
		t.Errorf("default admits scrapers from %v", o.MetricsNamespaceSelector)
	}
	o, _, err = parseOperatorFlags(t, "-workload-image", "w",
		"-metrics-namespace-label", "kubernetes.io/metadata.name=monitoring").options(logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	want := &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}
	if !reflect.DeepEqual(o.MetricsNamespaceSelector, want) {
		t.Errorf("selector %v, want %v", o.MetricsNamespaceSelector, want)
	}
}
