//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/hack/testenv"
)

// The tests below run in this order (go test keeps a file's order) and build on one another:
// the restart test checks that the earlier messages survive, and the shred test comes last.

// components are a tenant's Deployments.
var components = []string{"keystore", "gateway", "viewer"}

func TestTenantsReadyWithEveryDeploymentAvailable(t *testing.T) {
	ctx := t.Context()
	for _, tn := range []*tenant{s.a, s.b} {
		for _, c := range components {
			var d appsv1.Deployment
			if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: c}, &d); err != nil {
				t.Fatal(err)
			}
			want := *d.Spec.Replicas
			if d.Status.AvailableReplicas != want || d.Status.UpdatedReplicas != want {
				t.Errorf("%s/%s: %d of %d replicas available, %d updated", tn.Namespace, c, d.Status.AvailableReplicas, want, d.Status.UpdatedReplicas)
			}
			if want < 2 {
				t.Errorf("%s/%s: %d replicas, want the default 2", tn.Namespace, c, want)
			}
		}
		// The replicas are spread over the two workers (topology spread), so a node drain
		// leaves one up, as the PodDisruptionBudgets promise.
		for _, c := range components {
			nodes := map[string]bool{}
			for _, p := range s.pods(t, tn.Namespace, c) {
				nodes[p.Spec.NodeName] = true
			}
			if len(nodes) < 2 {
				t.Errorf("%s/%s: every replica on %v, want them spread over nodes", tn.Namespace, c, nodes)
			}
		}
	}
	// The printer columns say it to a person.
	out, err := s.k(ctx, "get", "securetexttenants")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get securetexttenants:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	header := strings.Fields(lines[0])
	for _, col := range []string{"NAME", "DISPLAY", "TEXT", "NAMESPACE", "READY", "VAULT", "WORKLOADS", "AGE"} {
		if !slices.Contains(header, col) {
			t.Errorf("kubectl get securetexttenants has no %s column: %q", col, lines[0])
		}
	}
	for _, tn := range []*tenant{s.a, s.b} {
		row := ""
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, tn.Name+" ") {
				row = l
			}
		}
		if row == "" || !strings.Contains(row, tn.Namespace) || strings.Count(row, "True") != 3 {
			t.Errorf("tenant %s's row does not show its namespace and Ready, Vault and Workloads True: %q", tn.Name, row)
		}
	}
}

// pods lists a tenant component's running pods.
func (s *suite) pods(t testing.TB, ns, component string) []corev1.Pod {
	t.Helper()
	return s.podsLabelled(t, ns, map[string]string{"app.kubernetes.io/component": component})
}

func (s *suite) podsLabelled(t testing.TB, ns string, labels map[string]string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := s.k8s.List(t.Context(), &list, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	return out
}

// logs is every line the component's running pods have logged.
func (s *suite) logs(t testing.TB, ns, component string) string {
	t.Helper()
	var b strings.Builder
	for _, p := range s.pods(t, ns, component) {
		out, err := s.clientset.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: component}).DoRaw(t.Context())
		if err != nil {
			t.Fatalf("logs of %s/%s: %v", ns, p.Name, err)
		}
		b.Write(out)
	}
	return b.String()
}

// findInLogs waits for re to match in a component's logs and returns its first submatch (or
// the match) that is not in seen.
func (s *suite) findInLogs(t testing.TB, ns, component string, re *regexp.Regexp, seen ...string) string {
	t.Helper()
	var found string
	if err := eventually(t.Context(), time.Minute, func() error {
		for _, m := range re.FindAllStringSubmatch(s.logs(t, ns, component), -1) {
			v := m[len(m)-1]
			if !slices.Contains(seen, v) {
				found = v
				return nil
			}
		}
		return fmt.Errorf("no %s in the %s logs of %s", re, component, ns)
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

// message is one the suite sent; the restart and shred tests read them again.
type message struct {
	tenant        *tenant
	id            string
	subject, body string
}

var sent []message

// A clinic's mail client submits through the tenant's SMTP Service (a NodePort: STARTTLS, AUTH)
// and gets 250; the console provider prints the text with the link; the patient opens it in
// Chromium through Traefik, proves holding the phone with the texted code, sets a first
// password and reads the message.
func TestSMTPMessageReadInBrowser(t *testing.T) {
	ctx := t.Context()
	tn := s.a
	var svc corev1.Service
	if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: tn.Namespace, Name: "gateway-smtp"}, &svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort || len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("gateway-smtp is %s with ports %v, want a NodePort", svc.Spec.Type, svc.Spec.Ports)
	}
	// externalTrafficPolicy Local: only nodes with a gateway answer on the NodePort.
	gateways := s.pods(t, tn.Namespace, "gateway")
	if len(gateways) == 0 {
		t.Fatal("no gateway pod running")
	}
	server := gateways[0].Status.HostIP
	port := fmt.Sprint(svc.Spec.Ports[0].NodePort)

	subject, body := "Lab results", "Your thyroid panel is normal. Reference "+rand.Text()
	links := regexp.MustCompile(`(https://` + regexp.QuoteMeta(tn.viewerHost()) + `/m/[a-z2-7]+)`)
	before := links.FindAllString(s.logs(t, tn.Namespace, "gateway"), -1)
	out, err := exec.CommandContext(ctx, "swaks", "--server", server, "--port", port,
		"--tls", "--tls-verify", "--tls-ca-path", s.vaultCAFile,
		"--auth", "PLAIN", "--auth-user", "ehr@"+tn.Name+".test", "--auth-password", tn.SMTPPassword,
		"--from", "ehr@"+tn.Name+".test", "--to", "2025550143@"+tn.textDomain(),
		"--header", "Subject: "+subject, "--body", body).CombinedOutput()
	t.Logf("swaks to %s:%s (a node with a gateway):\n%s", server, port, redact(string(out), tn.SMTPPassword))
	if err != nil {
		t.Fatalf("swaks: %v", err)
	}
	// swaks marks lines sent and received over TLS ~> and <~.
	if !regexp.MustCompile(`(?m)^ [-~]> \.\r?\n<[-~]  250 `).MatchString(string(out)) {
		t.Fatal("the message was not acknowledged with 250 after DATA")
	}
	link := s.findInLogs(t, tn.Namespace, "gateway", links, before...)
	sms := ""
	for l := range strings.Lines(s.logs(t, tn.Namespace, "gateway")) {
		if strings.Contains(l, link) {
			sms = l
		}
	}
	if strings.Contains(sms, body) || strings.Contains(sms, subject) {
		t.Errorf("the text carries the message: %q", sms)
	}

	ctxB := testenv.Browser(t, testenv.WithLoopbackHosts(tn.viewerHost()), testenv.WithTrustedCerts(tn.cert))
	act := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		resp, err := chromedp.RunResponse(ctxB, actions...)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if resp == nil || resp.Status != http.StatusOK {
			t.Fatalf("%s: %v, want a 200 page", what, resp)
		}
	}
	text := func() string {
		v, err := chromedp.Run(ctxB, chromedp.Evaluate[string](`document.body.innerText`))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	act("open the link", chromedp.Navigate(link))
	if page := text(); !strings.Contains(page, tn.DisplayName) || strings.Contains(page, body) {
		t.Fatalf("landing page does not name the clinic, or shows the message:\n%s", page)
	}
	act("continue", chromedp.Click(stepButton("open")))
	codes := regexp.MustCompile(`code is ([0-9]{6})\.`)
	codesBefore := codes.FindAllStringSubmatch(s.logs(t, tn.Namespace, "viewer"), -1)
	var seen []string
	for _, m := range codesBefore {
		seen = append(seen, m[1])
	}
	act("text me a code", chromedp.Click(stepButton("send-code")))
	code := s.findInLogs(t, tn.Namespace, "viewer", codes, seen...)
	const password = "violet harbour lanterns at dusk"
	act("set the password", chromedp.SendKeys(chromedp.ID("code"), code),
		chromedp.SendKeys(chromedp.ID("password"), password), chromedp.SendKeys(chromedp.ID("confirm"), password),
		chromedp.Click(stepButton("set-password")))
	if page := text(); !strings.Contains(page, body) || !strings.Contains(page, subject) {
		t.Fatalf("after setting the password the page does not show the message:\n%s", page)
	}
	testenv.CheckNoRequestsBeyondLoopback(t, ctxB)
	testenv.CheckNothingStored(t, ctxB)
	sent = append(sent, message{tenant: tn, subject: subject, body: body})
}

// stepButton is the submit button of the viewer page's form for step.
func stepButton(step string) chromedp.CSS {
	return chromedp.CSS(`main form:has(> input[name="step"][value="` + step + `"]) button[type="submit"]`)
}

func redact(s, secret string) string { return strings.ReplaceAll(s, secret, "<password>") }

// api is an HTTPS client of a tenant's API through Traefik on 127.0.0.1:443, verifying the
// tenant's public certificate for its API host.
func (s *suite) api(tn *tenant) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: s.ca.CertPool(), MinVersion: tls.VersionTLS12},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", httpsPort))
			},
		},
	}
}

func (s *suite) call(t testing.TB, tn *tenant, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "https://"+tn.apiHost()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tn.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.api(tn).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, out
}

// An EHR submits through the REST API on the tenant's API host, through Traefik, and reads the
// message's status back.
func TestRESTAPIThroughIngress(t *testing.T) {
	for _, tn := range []*tenant{s.a, s.b} {
		m := message{tenant: tn, subject: "Appointment", body: "Your appointment is confirmed. Reference " + rand.Text()}
		code, out := s.call(t, tn, http.MethodPost, "/v1/messages", map[string]string{"to": "+12025550143", "subject": m.subject, "body": m.body})
		if code != http.StatusCreated {
			t.Fatalf("%s: POST /v1/messages: %d %v", tn.Name, code, out)
		}
		id, _ := out["id"].(string)
		if id == "" {
			t.Fatalf("%s: POST /v1/messages answered no id: %v", tn.Name, out)
		}
		m.id = id
		code, out = s.call(t, tn, http.MethodGet, "/v1/messages/"+id, nil)
		if code != http.StatusOK || out["status"] == nil {
			t.Fatalf("%s: GET /v1/messages/%s: %d %v", tn.Name, id, code, out)
		}
		t.Logf("%s: message %s is %v", tn.Name, id, out["status"])
		if raw, _ := json.Marshal(out); bytes.Contains(raw, []byte(m.body)) {
			t.Errorf("%s: the status carries the message: %s", tn.Name, raw)
		}
		// Without the key: 401, nothing about the message.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+tn.apiHost()+"/v1/messages/"+id, nil)
		resp, err := s.api(tn).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: GET without a key: %d, want 401", tn.Name, resp.StatusCode)
		}
		sent = append(sent, m)
	}
	// One tenant's key is nothing at the other's API.
	b := *s.b
	b.APIKey = s.a.APIKey
	if code, out := s.call(t, &b, http.MethodGet, "/v1/messages/"+sent[len(sent)-1].id, nil); code != http.StatusUnauthorized {
		t.Errorf("tenant alpha's key at bravo's API: %d %v, want 401", code, out)
	}
}

// Isolation, enforced by the CNI: a pod in alpha's namespace wearing alpha's gateway's labels
// reaches alpha's keystore and database, not bravo's keystore, database or viewer; the viewers
// admit the ingress controller's namespace and no other; alpha's keystore identity cannot log
// in to Vault as bravo's keystore.
func TestIsolation(t *testing.T) {
	ctx := t.Context()
	a, b := s.a, s.b
	// The labels alpha's policies know its gateway by. Alpha's gateway Service selects the
	// probe too (it has no listener), so it goes when the test ends.
	gatewayLabels := map[string]string{"securetext.io/tenant": a.Name, "app.kubernetes.io/component": "gateway"}
	probes := []struct{ ns, name string }{{a.Namespace, "probe-gateway"}, {"traefik", "probe-ingress"}, {"default", "probe-elsewhere"}}
	for i, p := range probes {
		labels := map[string]string{"app": "e2e-probe"}
		if i == 0 {
			labels = gatewayLabels
		}
		if err := s.apply(ctx, "probe.yaml", probePod(p.ns, p.name, labels)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = s.k(context.Background(), "-n", p.ns, "delete", "pod", p.name) })
	}
	for _, p := range probes {
		if _, err := s.k(ctx, "-n", p.ns, "wait", "--for=condition=Ready", "pod/"+p.name, "--timeout="+readyTimeout.String()); err != nil {
			t.Fatal(err)
		}
	}
	// Pods are probed by their addresses: a Service's virtual address answers a connection
	// itself on some ports, a pod's never does.
	pod := func(tn *tenant, labels map[string]string) string {
		t.Helper()
		pods := s.podsLabelled(t, tn.Namespace, labels)
		if len(pods) == 0 {
			t.Fatalf("no running pod %v in %s", labels, tn.Namespace)
		}
		return pods[0].Status.PodIP
	}
	component := func(tn *tenant, c string) string {
		return pod(tn, map[string]string{"securetext.io/tenant": tn.Name, "app.kubernetes.io/component": c})
	}
	postgres := func(tn *tenant) string { return pod(tn, map[string]string{"app": "postgres"}) }
	for _, c := range []struct {
		from       int
		host, port string
		open       bool
	}{
		{0, component(a, "keystore"), "8443", true},
		{0, postgres(a), "5432", true},
		{0, component(b, "keystore"), "8443", false},
		{0, postgres(b), "5432", false},
		{0, component(b, "viewer"), "9443", false},
		{1, component(a, "viewer"), "9443", true},
		{1, component(b, "viewer"), "9443", true},
		{2, component(a, "viewer"), "9443", false},
		{2, component(a, "keystore"), "8443", false},
	} {
		p := probes[c.from]
		if err := s.expectReach(ctx, p.ns, p.name, c.host, c.port, c.open); err != nil {
			t.Error(err)
		} else {
			t.Logf("%s/%s -> %s:%s open=%v", p.ns, p.name, c.host, c.port, c.open)
		}
	}

	// Vault: a token of alpha's keystore ServiceAccount (audience vault, as its pod projects
	// it) logs in with alpha's role and is refused bravo's.
	tok, err := s.clientset.CoreV1().ServiceAccounts(a.Namespace).CreateToken(ctx, "keystore", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"vault"}, ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	login := func(role string) error {
		c, err := s.vault.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.ClearToken()
		_, err = c.Logical().WriteWithContext(ctx, "auth/kubernetes/login", map[string]any{"role": role, "jwt": tok.Status.Token})
		return err
	}
	if err := login("securetext-tenant-" + a.Name); err != nil {
		t.Errorf("alpha's keystore token with alpha's role: %v", err)
	}
	if err := login("securetext-tenant-" + b.Name); err == nil {
		t.Error("alpha's keystore token logged in with bravo's role")
	} else {
		t.Logf("alpha's keystore token with bravo's role: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// owned lists the objects the operator made in a namespace (everything but pods and the API
// server's own bookkeeping) with one metadata field each, resourceVersion or generation: a
// reconcile that changes nothing leaves every one as it was.
func (s *suite) owned(t testing.TB, ns, field string) map[string]string {
	t.Helper()
	out, err := s.k(t.Context(), "-n", ns, "get",
		"deployments,services,configmaps,secrets,serviceaccounts,networkpolicies,ingresses,poddisruptionbudgets,roles,rolebindings",
		"-l", "app.kubernetes.io/managed-by=securetext-operator",
		"-o", `jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.`+field+`}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for l := range strings.Lines(out) {
		if f := strings.Fields(l); len(f) == 2 {
			m[f[0]] = f[1]
		}
	}
	if len(m) == 0 {
		t.Fatalf("no objects of the operator's in %s", ns)
	}
	return m
}

func (s *suite) tenantObject(t testing.TB, name string) *securetextv1alpha1.SecureTextTenant {
	t.Helper()
	var stt securetextv1alpha1.SecureTextTenant
	if err := s.k8s.Get(t.Context(), client.ObjectKey{Name: name}, &stt); err != nil {
		t.Fatal(err)
	}
	return &stt
}

// Restarts lose nothing and make the operator write nothing. First every operator pod is
// deleted: the new leader reconciles both tenants and writes no object and no status. Then
// every SecureText pod of tenant alpha is deleted (its database stays): they come back, the
// tenant is Ready again, no object's spec has changed, and the messages sent before are there.
func TestRestartLosesNothing(t *testing.T) {
	ctx := t.Context()
	tenants := []*tenant{s.a, s.b}
	before := map[string]map[string]string{}
	tenantBefore := map[string]*securetextv1alpha1.SecureTextTenant{}
	for _, tn := range tenants {
		before[tn.Name] = s.owned(t, tn.Namespace, "resourceVersion")
		tenantBefore[tn.Name] = s.tenantObject(t, tn.Name)
	}
	if _, err := s.k(ctx, "-n", operatorNS, "delete", "pods", "-l", "app.kubernetes.io/name="+operator); err != nil {
		t.Fatal(err)
	}
	if err := s.rollout(ctx, operatorNS, "deployment/"+operator); err != nil {
		t.Fatal(err)
	}
	s.waitReconciled(t)
	for _, tn := range tenants {
		s.unchanged(t, tn.Namespace, "resourceVersion", before[tn.Name], "after the operator's restart")
		if b, a := tenantBefore[tn.Name], s.tenantObject(t, tn.Name); a.ResourceVersion != b.ResourceVersion {
			t.Errorf("SecureTextTenant %s written after the operator's restart (resourceVersion %s -> %s)\n%s",
				tn.Name, b.ResourceVersion, a.ResourceVersion, tenantChange(b, a))
		}
	}

	// Deployments and PodDisruptionBudgets get new status when pods go: their generation
	// (spec) must stay; the other objects have no status and must not change at all.
	generations := s.owned(t, s.a.Namespace, "generation")
	versions := s.owned(t, s.a.Namespace, "resourceVersion")
	if _, err := s.k(ctx, "-n", s.a.Namespace, "delete", "pods", "-l", "securetext.io/tenant="+s.a.Name); err != nil {
		t.Fatal(err)
	}
	for _, c := range components {
		if err := s.rollout(ctx, s.a.Namespace, "deployment/"+c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.waitReady(ctx, s.a); err != nil {
		t.Fatalf("tenant %s after its pods' restart: %v", s.a.Name, err)
	}
	s.waitReconciled(t)
	s.unchanged(t, s.a.Namespace, "generation", generations, "after the tenant's pods' restart")
	s.unchanged(t, s.a.Namespace, "resourceVersion", versions, "after the tenant's pods' restart", "Deployment", "PodDisruptionBudget")
	for _, m := range sent {
		if m.id == "" {
			continue
		}
		if code, out := s.call(t, m.tenant, http.MethodGet, "/v1/messages/"+m.id, nil); code != http.StatusOK {
			t.Errorf("%s: message %s after the restarts: %d %v", m.tenant.Name, m.id, code, out)
		}
	}
}

// tenantChange describes what differs between two versions of a tenant, and who wrote the
// second (its managed fields), for the message of a write that should not have happened.
func tenantChange(before, after *securetextv1alpha1.SecureTextTenant) string {
	var b strings.Builder
	show := func(what string, v any) {
		j, _ := json.Marshal(v)
		fmt.Fprintf(&b, "  %s: %s\n", what, j)
	}
	if !slices.Equal(before.Finalizers, after.Finalizers) {
		show("finalizers before", before.Finalizers)
		show("finalizers after", after.Finalizers)
	}
	if !maps.Equal(before.Annotations, after.Annotations) || !maps.Equal(before.Labels, after.Labels) {
		show("annotations and labels before", []any{before.Annotations, before.Labels})
		show("annotations and labels after", []any{after.Annotations, after.Labels})
	}
	show("status before", before.Status)
	show("status after", after.Status)
	for _, f := range after.ManagedFields {
		fmt.Fprintf(&b, "  managed by %s (%s %s) at %s\n", f.Manager, f.Operation, f.Subresource, f.Time)
	}
	return b.String()
}

// waitReconciled waits until the operator's leader has reconciled both tenants and its count
// of reconciles has stood still for 10 seconds.
func (s *suite) waitReconciled(t testing.TB) {
	t.Helper()
	var last float64
	var since time.Time
	if err := eventually(t.Context(), 3*time.Minute, func() error {
		n := s.operatorReconciles(t)
		if n != last {
			last, since = n, time.Now()
		}
		if n < 2 || time.Since(since) < 10*time.Second {
			return fmt.Errorf("the operator has reconciled %v times, the last change %s ago", n, time.Since(since).Round(time.Second))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// unchanged compares the operator's objects' field (resourceVersion or generation) with before,
// leaving out the objects of the skipped kinds.
func (s *suite) unchanged(t testing.TB, ns, field string, before map[string]string, when string, skip ...string) {
	t.Helper()
	after := s.owned(t, ns, field)
	for obj := range after {
		if slices.Contains(skip, obj[:strings.IndexByte(obj, '/')]) {
			delete(after, obj)
			delete(before, obj)
		}
	}
	for obj, v := range before {
		if after[obj] != v {
			t.Errorf("%s: %s written %s (%s %s -> %s)", ns, obj, when, field, v, after[obj])
		}
	}
	for obj := range after {
		if _, ok := before[obj]; !ok {
			t.Errorf("%s: %s made %s", ns, obj, when)
		}
	}
}

// operatorReconciles is the operator leader's count of SecureTextTenant reconciles that did not fail,
// read from its HTTPS metrics as Prometheus would: through kubectl port-forward, with the token
// of a ServiceAccount bound to the chart's metrics-reader ClusterRole.
func (s *suite) operatorReconciles(t testing.TB) float64 {
	t.Helper()
	ctx := t.Context()
	leader := s.operatorLeader(t)
	tok, err := s.clientset.CoreV1().ServiceAccounts(operatorNS).CreateToken(ctx, metricsReader, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pf := exec.CommandContext(ctx, s.kubectl, "--kubeconfig", s.kubeconfig, "-n", operatorNS, "port-forward", "--address", "127.0.0.1", "pod/"+leader, ":8443")
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pf.Process.Kill(); _ = pf.Wait() }()
	line := make([]byte, 256)
	n, err := stdout.Read(line)
	m := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:([0-9]+)`).FindSubmatch(line[:n])
	if err != nil || m == nil {
		t.Fatalf("kubectl port-forward to %s: %q %v", leader, line[:n], err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		// The operator's metrics certificate is its own self-signed one, as Prometheus meets it
		// (the ServiceMonitor's insecureSkipVerify); what matters here is the token check.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://127.0.0.1:"+string(m[1])+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Status.Token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics of %s with the metrics-reader's token: %d %s", leader, resp.StatusCode, body)
	}
	var total float64
	for l := range strings.Lines(string(body)) {
		// A tenant's reconcile ends in requeue_after (the drift check) or success.
		if strings.HasPrefix(l, "controller_runtime_reconcile_total{") && strings.Contains(l, `controller="securetexttenant"`) && !strings.Contains(l, `result="error"`) {
			var v float64
			if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err == nil {
				total += v
			}
		}
	}
	if total == 0 {
		var seen []string
		for l := range strings.Lines(string(body)) {
			if strings.Contains(l, "reconcile_total") {
				seen = append(seen, strings.TrimSpace(l))
			}
		}
		t.Logf("%s: no SecureTextTenant reconcile counted; reconcile series: %q", leader, seen)
	}
	return total
}

// metricsReader is the suite's ServiceAccount bound to the chart's metrics-reader ClusterRole.
const metricsReader = "e2e-metrics-reader"

// operatorLeader is the operator pod that holds the leader election lease.
func (s *suite) operatorLeader(t testing.TB) string {
	t.Helper()
	var leader string
	if err := eventually(t.Context(), 2*time.Minute, func() error {
		out, err := s.k(t.Context(), "-n", operatorNS, "get", "leases", "-o", `jsonpath={range .items[*]}{.spec.holderIdentity}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for _, p := range s.podsLabelled(t, operatorNS, map[string]string{"app.kubernetes.io/name": operator}) {
			for l := range strings.Lines(out) {
				if strings.HasPrefix(l, p.Name+"_") {
					leader = p.Name
					return nil
				}
			}
		}
		return fmt.Errorf("no running operator pod holds a lease: %q", out)
	}); err != nil {
		t.Fatal(err)
	}
	return leader
}

// Deleting bravo, whose deletionPolicy is Shred, destroys bravo's Vault key and namespace and
// leaves alpha as it was.
func TestShredTenantLeavesTheOther(t *testing.T) {
	ctx := t.Context()
	a, b := s.a, s.b
	aBefore := s.owned(t, a.Namespace, "resourceVersion")
	mountsBefore, err := s.vault.Sys().ListMountsWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mount := func(tn *tenant) string { return "securetext/" + tn.Name + "/transit/" }
	for _, tn := range []*tenant{a, b} {
		if _, ok := mountsBefore[mount(tn)]; !ok {
			t.Fatalf("no Transit mount %s before the deletion: %v", mount(tn), slices.Sorted(maps.Keys(mountsBefore)))
		}
	}
	if err := s.k8s.Delete(ctx, s.tenantObject(t, b.Name)); err != nil {
		t.Fatal(err)
	}
	if err := eventually(ctx, readyTimeout, func() error {
		err := s.k8s.Get(ctx, client.ObjectKey{Name: b.Namespace}, &corev1.Namespace{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("namespace %s still there (%v)", b.Namespace, err)
	}); err != nil {
		t.Fatal(err)
	}
	mounts, err := s.vault.Sys().ListMountsWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mounts[mount(b)]; ok {
		t.Errorf("bravo's Transit mount %s survived the shred", mount(b))
	}
	if _, ok := mounts[mount(a)]; !ok {
		t.Errorf("alpha's Transit mount %s went with bravo", mount(a))
	}
	if _, err := s.vault.Logical().ReadWithContext(ctx, "auth/kubernetes/role/securetext-tenant-"+b.Name); err != nil {
		t.Fatal(err)
	} else if sec, _ := s.vault.Logical().ReadWithContext(ctx, "auth/kubernetes/role/securetext-tenant-"+b.Name); sec != nil {
		t.Error("bravo's Vault role survived the shred")
	}
	if sec, err := s.vault.Logical().ReadWithContext(ctx, "auth/kubernetes/role/securetext-tenant-"+a.Name); err != nil || sec == nil {
		t.Errorf("alpha's Vault role: %v, %v", sec, err)
	}
	if err := s.waitReady(ctx, a); err != nil {
		t.Fatal(err)
	}
	s.unchanged(t, a.Namespace, "resourceVersion", aBefore, "when bravo was deleted")
	m := message{tenant: a, subject: "Refill", body: "Your refill is ready. Reference " + rand.Text()}
	if code, out := s.call(t, a, http.MethodPost, "/v1/messages", map[string]string{"to": "+12025550143", "subject": m.subject, "body": m.body}); code != http.StatusCreated {
		t.Errorf("alpha after bravo's deletion: POST /v1/messages: %d %v", code, out)
	}
}
