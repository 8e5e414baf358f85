package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/securetext/securetext/workloads/viewer"
)

// The viewer's defaults: first use proves the phone with a texted code (so an SMS provider
// is needed, or the code turned off on purpose), the sign-in throttle of #19, the default time
// zone, and no trusted proxy.
func TestViewerFlags(t *testing.T) {
	env := map[string]string{}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for k, v := range map[string]string{
		"TENANT": "acme", "TENANT_NAME": "Acme Clinic",
		"KEYSTORE_URL": "https://keystore:8443", "KEYSTORE_CERT": "c", "KEYSTORE_KEY": "k", "KEYSTORE_CA": "ca",
		"TLS_CERT": "t", "TLS_KEY": "tk", "DATABASE_URL_FILE": "/secrets/db",
	} {
		env[viewerEnvPrefix+k] = v
	}
	_, err := parseViewerFlags(nil, lookup, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-sms-provider") || !strings.Contains(err.Error(), "-one-time-code=false") {
		t.Fatalf("one-time code without an SMS provider: %v, want a refusal naming -sms-provider and -one-time-code=false", err)
	}
	f, err := parseViewerFlags([]string{"-one-time-code=false"}, lookup, io.Discard)
	if err != nil {
		t.Fatalf("one-time code turned off: %v", err)
	}
	if f.oneTimeCode {
		t.Error("-one-time-code=false left the code on")
	}
	env[viewerEnvPrefix+"SMS_PROVIDER"] = "console"
	f, err = parseViewerFlags(nil, lookup, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !f.oneTimeCode || f.maxFailures != 100 || f.maxFailuresPerClient != 10 || f.failureWindow != 30*24*time.Hour ||
		f.maxDelay != 15*time.Minute || f.timeZone != viewer.DefaultTimeZone || f.trustedProxies != "" {
		t.Errorf("defaults %+v; want the one-time code on, 100 failures per 30 days, 10 per client, at most 15m delay, %s, no trusted proxy",
			f, viewer.DefaultTimeZone)
	}
}
