package controllers_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/hack/testenv"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// TestOperatorOutputRunsTheWorkloads runs what the operator made for a tenant, read back from
// the API server (each Deployment's command, environment, Secrets and mounted files), as real
// keystore, gateway and viewer processes on loopback, against the suite's Vault and a real
// PostgreSQL database. A message sent through that gateway must be readable through that
// viewer: the operator's output is what the workloads expect.
func TestOperatorOutputRunsTheWorkloads(t *testing.T) {
	ctx := context.Background()
	const name, ns = "e2e", "securetext-e2e"
	bins := e2eBuild(t)
	dbURL := testenv.PostgresDatabase(t)

	tenant := newTenant(name) // the console SMS provider: the gateway prints each text
	if err := k8s.Create(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(ctx, tenant); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
		eventually(t, "tenant deleted", func() error { return gone(ctx, tenant) })
	})
	eventually(t, "namespace "+ns, func() error { return k8s.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}) })
	// The database Secret is the admin's to make (spec.database.secretRef, key url).
	db := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}, StringData: map[string]string{"url": dbURL}}
	if err := k8s.Create(ctx, db); err != nil {
		t.Fatal(err)
	}
	condition(t, name, securetextv1alpha1.ConditionVaultReady, metav1.ConditionTrue, "")
	// The operator does not watch the database Secret (it did not make it): wait until it has
	// seen it, so that the checksums below already include its version.
	condition(t, name, securetextv1alpha1.ConditionWorkloadsReady, metav1.ConditionFalse, securetextv1alpha1.ReasonWorkloadsProgressing)
	eventually(t, "Deployments and ConfigMaps", func() error {
		for _, c := range []string{"keystore", "gateway", "viewer"} {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: c}, &appsv1.Deployment{}); err != nil {
				return err
			}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: c + "-config"}, &corev1.ConfigMap{}); err != nil {
				return err
			}
		}
		return nil
	})
	apiKey := e2eAddSender(t, ns)

	ca := e2eTenantCA(t, ns)
	ks := e2eMaterialize(t, ns, "keystore", bins, nil)
	e2eReplaceKeystoreCert(t, ks, ca, ns)
	gw := e2eMaterialize(t, ns, "gateway", bins, ks)
	vw := e2eMaterialize(t, ns, "viewer", bins, ks)
	ks.start(t).waitReady(t, e2eHTTPS(ca, "keystore."+ns+".svc"))
	publicHost := tenant.Spec.Hostnames.Viewer // what the serving certificate and the links name
	https := e2eHTTPS(ca, publicHost)
	gatewayProc, viewerProc := gw.start(t), vw.start(t)
	gatewayProc.waitReady(t, https)
	viewerProc.waitReady(t, https)

	// A sender submits through the REST API with the key the admin gave it.
	subject, body := "Lab results", "Your biopsy result is benign. Reference "+rand.Text()
	msg, _ := json.Marshal(map[string]string{"to": "+12025550143", "subject": subject, "body": body})
	post, _ := http.NewRequest(http.MethodPost, "https://"+gw.addr(t, "https")+"/v1/messages", bytes.NewReader(msg))
	post.Header.Set("Authorization", "Bearer "+apiKey)
	post.Header.Set("Content-Type", "application/json")
	if code, answer := e2eDo(t, https, post); code != http.StatusCreated {
		t.Fatalf("POST /v1/messages: %d %s", code, answer)
	}

	// The console provider prints the text on the gateway's standard output.
	viewerURL := gw.env[controllers.EnvPrefixGateway+"VIEWER_URL"]
	linkRE := regexp.MustCompile(regexp.QuoteMeta(viewerURL) + `/m/\S+`)
	var text string
	eventually(t, "the SMS with the link", func() error {
		for line := range strings.Lines(gatewayProc.stdout.String()) {
			if linkRE.MatchString(line) {
				text = strings.TrimSpace(line)
				return nil
			}
		}
		return errors.New("no text printed yet")
	})
	if strings.Contains(text, body) || strings.Contains(text, subject) {
		t.Errorf("the SMS carries the message: %q", text)
	}

	// The patient opens the link at this viewer (the link's host is the Ingress's, which sends
	// the request on with that Host), proves holding the phone with the code the viewer texts
	// (on by default: the operator renders the tenant's policy), chooses a password and sees
	// the message.
	p := e2eNewPatient(t, https, "https://"+vw.addr(t, "https"), publicHost)
	link := strings.TrimPrefix(linkRE.FindString(text), viewerURL)
	if code, page := p.send(t, http.MethodGet, link, nil); code != http.StatusOK || strings.Contains(page, body) {
		t.Fatalf("landing page: %d\n%s", code, page)
	}
	if code, page := p.send(t, http.MethodPost, link, url.Values{"step": {"open"}}); code != http.StatusOK || !strings.Contains(page, "Text me a code") {
		t.Fatalf("open: %d; first use does not ask for a texted code:\n%s", code, page)
	}
	if code, page := p.send(t, http.MethodPost, link, url.Values{"step": {"send-code"}, "purpose": {"setup"}}); code != http.StatusOK {
		t.Fatalf("send code: %d\n%s", code, page)
	}
	// The console provider prints the viewer's texts into the viewer's output (standard error).
	codeRE := regexp.MustCompile(`code is ([0-9]{6})\.`)
	var otc string
	eventually(t, "the SMS with the one-time code", func() error {
		if m := codeRE.FindStringSubmatch(viewerProc.output.String()); m != nil {
			otc = m[1]
			return nil
		}
		return errors.New("no code printed yet")
	})
	const password = "purple giraffe dances at noon"
	code, page := p.send(t, http.MethodPost, link, url.Values{"step": {"set-password"}, "code": {otc}, "password": {password}, "confirm": {password}})
	if code != http.StatusOK || !strings.Contains(page, body) || !strings.Contains(page, subject) {
		t.Fatalf("set password: %d; the page does not show the message %q:\n%s", code, body, page)
	}
}

// e2eBuild builds the workloads image's binaries and returns each by the path the image has
// it at (the Dockerfile copies them to /usr/local/bin).
func e2eBuild(t *testing.T) map[string]string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	goTool := filepath.Join(os.Getenv("GOROOT"), "bin", "go") // go test sets GOROOT for its tests
	if _, err := os.Stat(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
			t.Fatalf("the go tool builds the workloads: %v", err)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(goTool, "build", "-o", dir+"/", "./workloads/cmd/securetext")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the workloads: %v\n%s", err, out)
	}
	return map[string]string{
		"/usr/local/bin/securetext": filepath.Join(dir, "securetext"),
	}
}

// e2eAddSender does what an admin does to let a sender in: it adds the sender's entry to the
// senders Secret, and returns the sender's API key. The gateway reads the file at start, so
// the operator must roll the gateway's pods: their config checksum changes.
func e2eAddSender(t *testing.T, ns string) string {
	t.Helper()
	ctx := context.Background()
	before := checksums(t, ns)
	sender, _, apiKey, err := gateway.NewCredentials(ctx, "ehr", "ehr@clinic.example")
	if err != nil {
		t.Fatal(err)
	}
	file, err := yaml.Marshal(gateway.SendersFile{Senders: []gateway.Sender{sender}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "add a sender", func() error {
		var s corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: controllers.SecretSenders}, &s); err != nil {
			return err
		}
		s.Data["senders.yaml"] = file
		return k8s.Update(ctx, &s)
	})
	eventually(t, "the gateway's config checksum changes", func() error {
		now := checksums(t, ns)
		if now["gateway"] == before["gateway"] {
			return errors.New("gateway checksum unchanged")
		}
		if now["viewer"] != before["viewer"] || now["keystore"] != before["keystore"] {
			return fmt.Errorf("a component that does not mount the senders file rolled: %v → %v", before, now)
		}
		return nil
	})
	return apiKey
}

func e2eTenantCA(t *testing.T, ns string) *tenantpki.CA {
	t.Helper()
	var s corev1.Secret
	e2eGet(t, ns, controllers.SecretTenantCA, &s)
	ca, err := tenantpki.LoadCA(s.Data["ca.crt"], s.Data["ca.key"])
	if err != nil {
		t.Fatalf("Secret %s: %v", controllers.SecretTenantCA, err)
	}
	return ca
}

// e2eReplaceKeystoreCert is the one deviation from the operator's output. The keystore's
// certificate (Secret keystore-tls) names keystore.<ns>.svc and its other Service names, no
// IP address, and here the gateway and viewer dial 127.0.0.1. A replacement from the
// operator's own tenant CA, for the same names plus 127.0.0.1, takes the place of its tls.crt
// and tls.key; everything else, the CA that the keystore and its clients trust included, is
// the operator's.
func e2eReplaceKeystoreCert(t *testing.T, ks *e2eWorkload, ca *tenantpki.CA, ns string) {
	t.Helper()
	cert, err := ca.IssueServer(controllers.KeystoreDNSNames(ns), []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tenantpki.KeyPEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	for flag, data := range map[string][]byte{"TLS_CERT": tenantpki.CertPEM(cert), "TLS_KEY": key} {
		file := ks.env[controllers.EnvPrefixKeystore+flag]
		if !strings.HasPrefix(file, ks.root) {
			t.Fatalf("keystore: %s%s = %q is not a mounted file", controllers.EnvPrefixKeystore, flag, file)
		}
		e2eWriteFile(t, file, data)
	}
}

// e2eWorkload is a component's container as the operator rendered it, set up on this machine.
type e2eWorkload struct {
	name   string
	root   string            // stands in for the container's file system
	argv   []string          // command and arguments, with the binary built here
	env    map[string]string // the container's environment, rewritten for loopback
	listen map[string]string // a listen address of the operator's (":8443") → the loopback one
	ports  map[string]int32  // container ports by name
	labels map[string]string // the pod's labels
	probe  *corev1.Probe     // readiness
}

// e2eListenAddr is how the operator writes a listen address: a port on every interface.
var e2eListenAddr = regexp.MustCompile(`^:[0-9]+$`)

// e2eMaterialize reads component's Deployment and what it refers to from the API server and
// lays it out for a process: mounted Secrets and the projected token as files under a
// temporary root, and the environment with paths moved under that root, listen addresses moved
// to free loopback ports, and the keystore's Service URL pointed at ks. Nothing else changes.
// Whatever a process could not use fails the test.
func e2eMaterialize(t *testing.T, ns, component string, bins map[string]string, ks *e2eWorkload) *e2eWorkload {
	t.Helper()
	var d appsv1.Deployment
	e2eGet(t, ns, component, &d)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("%s: %d containers and %d init containers, want one container", component, len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	w := &e2eWorkload{name: component, root: t.TempDir(), env: map[string]string{}, listen: map[string]string{},
		ports: map[string]int32{}, labels: d.Spec.Template.Labels, probe: c.ReadinessProbe}
	for _, p := range c.Ports {
		w.ports[p.Name] = p.ContainerPort
	}
	command := c.Command
	if len(command) == 0 {
		command = []string{"/usr/local/bin/securetext"} // the image's entrypoint
	}
	bin, ok := bins[command[0]]
	if !ok {
		t.Fatalf("%s runs %q, which the workloads image does not have (%v)", component, command[0], slices.Sorted(maps.Keys(bins)))
	}
	w.argv = append(append([]string{bin}, command[1:]...), c.Args...)

	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Fatalf("%s: envFrom %+v: this test reads ConfigMaps only", component, from)
		}
		var cm corev1.ConfigMap
		e2eGet(t, ns, from.ConfigMapRef.Name, &cm)
		for k, v := range cm.Data {
			w.env[from.Prefix+k] = v
		}
	}
	for _, e := range c.Env { // env wins over envFrom, as in the kubelet
		switch {
		case e.ValueFrom == nil:
			w.env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref, s := e.ValueFrom.SecretKeyRef, corev1.Secret{}
			e2eGet(t, ns, ref.Name, &s)
			v, ok := s.Data[ref.Key]
			if !ok {
				t.Fatalf("%s: env %s refers to key %q, which Secret %s does not have", component, e.Name, ref.Key, ref.Name)
			}
			w.env[e.Name] = string(v)
		default:
			t.Fatalf("%s: env %s comes from %+v, which this test does not read", component, e.Name, e.ValueFrom)
		}
	}

	var mountPaths []string
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 || m.SubPath != "" {
			t.Fatalf("%s: volume mount %+v has no volume, or a subPath", component, m)
		}
		v, dir := pod.Volumes[i], filepath.Join(w.root, m.MountPath)
		mountPaths = append(mountPaths, m.MountPath)
		switch {
		case v.Secret != nil:
			var s corev1.Secret
			e2eGet(t, ns, v.Secret.SecretName, &s)
			e2eWriteItems(t, component, dir, s.Data, v.Secret.Items)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				tok := src.ServiceAccountToken
				if tok == nil {
					t.Fatalf("%s: projected volume %s has a source other than a token: %+v", component, v.Name, src)
				}
				// What the kubelet projects: a TokenRequest token of the pod's account for the
				// volume's audience, which Vault reviews against this API server.
				e2eWriteFile(t, filepath.Join(dir, tok.Path), []byte(kubeAuth.Token(t, ns, pod.ServiceAccountName, tok.Audience)))
			}
		case v.ConfigMap != nil: // the gateway's retention settings
			var cm corev1.ConfigMap
			e2eGet(t, ns, v.ConfigMap.Name, &cm)
			data := maps.Clone(cm.BinaryData)
			if data == nil {
				data = map[string][]byte{}
			}
			for k, val := range cm.Data {
				data[k] = []byte(val)
			}
			e2eWriteItems(t, component, dir, data, v.ConfigMap.Items)
		default:
			t.Fatalf("%s: volume %s is neither a Secret, a ConfigMap nor a projected token", component, v.Name)
		}
	}

	for k, v := range w.env {
		switch {
		case e2eListenAddr.MatchString(v):
			if w.listen[v] == "" {
				port, err := testenv.FreePort()
				if err != nil {
					t.Fatal(err)
				}
				w.listen[v] = "127.0.0.1:" + strconv.Itoa(port)
			}
			w.env[k] = w.listen[v]
		case strings.HasPrefix(v, "/"):
			if !slices.ContainsFunc(mountPaths, func(dir string) bool { return strings.HasPrefix(v, dir+"/") }) {
				t.Fatalf("%s: %s=%s is under no volume mount of the pod", component, k, v)
			}
			if _, err := os.Stat(filepath.Join(w.root, v)); err != nil {
				t.Fatalf("%s: %s=%s: the volume mounted there has no such file", component, k, v)
			}
			w.env[k] = filepath.Join(w.root, v)
		case e2eKeystoreURL(ns, v) != nil:
			if ks == nil {
				t.Fatalf("%s: %s=%s, but the keystore is not set up", component, k, v)
			}
			w.env[k] = "https://" + ks.serviceTarget(t, ns, e2eKeystoreURL(ns, v))
		}
	}
	return w
}

// e2eKeystoreURL parses v if it is a URL of the keystore's Service.
func e2eKeystoreURL(ns, v string) *url.URL {
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "https" || !slices.Contains(controllers.KeystoreDNSNames(ns), u.Hostname()) {
		return nil
	}
	return u
}

// serviceTarget follows u through the keystore's Service (its selector and port) to the
// container port it reaches, and returns where ks listens for that port here.
func (ks *e2eWorkload) serviceTarget(t *testing.T, ns string, u *url.URL) string {
	t.Helper()
	var svc corev1.Service
	e2eGet(t, ns, controllers.KeystoreServiceName, &svc)
	for k, v := range svc.Spec.Selector {
		if ks.labels[k] != v {
			t.Fatalf("Service %s selects %v, which the keystore's pods (%v) do not match", svc.Name, svc.Spec.Selector, ks.labels)
		}
	}
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.Port)) != u.Port() {
			continue
		}
		target := p.TargetPort.IntVal
		if p.TargetPort.StrVal != "" {
			target = ks.ports[p.TargetPort.StrVal]
		}
		if addr := ks.listen[":"+strconv.Itoa(int(target))]; addr != "" {
			return addr
		}
		t.Fatalf("%s: Service port %d goes to container port %v, where the keystore does not listen (%v)", u, p.Port, p.TargetPort, ks.listen)
	}
	t.Fatalf("%s: the keystore's Service has no port %s", u, u.Port())
	return ""
}

// addr is where w listens, here, for its container port called name.
func (w *e2eWorkload) addr(t *testing.T, name string) string {
	t.Helper()
	addr := w.listen[":"+strconv.Itoa(int(w.ports[name]))]
	if addr == "" {
		t.Fatalf("%s: container port %q (%d) is none of the addresses it listens on (%v)", w.name, name, w.ports[name], w.listen)
	}
	return addr
}

func e2eGet(t *testing.T, ns, name string, obj client.Object) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatalf("%T %s: %v", obj, name, err)
	}
}

// e2eWriteItems writes a volume's keys as the kubelet does: the listed items at their paths,
// or every key as a file of its name.
func e2eWriteItems(t *testing.T, component, dir string, data map[string][]byte, items []corev1.KeyToPath) {
	t.Helper()
	if len(items) == 0 {
		for k := range data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("%s: a volume projects key %q, which its Secret does not have", component, it.Key)
		}
		e2eWriteFile(t, filepath.Join(dir, it.Path), v)
	}
}

func e2eWriteFile(t *testing.T, file string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// e2eProcess is a running workload.
type e2eProcess struct {
	w      *e2eWorkload
	cmd    *exec.Cmd
	stdout testenv.LogTail // standard output: where the console SMS provider prints texts
	output testenv.LogTail // standard output and error, for failure messages
	exited <-chan struct{}
}

// start runs w with exactly its environment (and PATH and HOME), and stops it at the end.
func (w *e2eWorkload) start(t *testing.T) *e2eProcess {
	t.Helper()
	p := &e2eProcess{w: w, cmd: exec.Command(w.argv[0], w.argv[1:]...)}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + w.root}
	for _, k := range slices.Sorted(maps.Keys(w.env)) {
		p.cmd.Env = append(p.cmd.Env, k+"="+w.env[k])
	}
	p.cmd.Stdout, p.cmd.Stderr = io.MultiWriter(&p.stdout, &p.output), &p.output
	// A workload must not outlive a test process that dies without cleaning up.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if p.exited, err = testenv.StartChild(p.cmd, nil); err != nil {
		t.Fatalf("start %s: %v", w.name, err)
	}
	t.Cleanup(func() {
		testenv.StopChild(p.cmd, p.exited, syscall.SIGTERM, 15*time.Second)
		if t.Failed() || !p.cmd.ProcessState.Success() {
			t.Logf("%s (%v), its last lines:\n%s", w.name, p.cmd.ProcessState, p.output.Last(40))
		}
	})
	return p
}

// waitReady polls the workload's readiness probe, as the kubelet does, until it passes.
func (p *e2eProcess) waitReady(t *testing.T, c *http.Client) {
	t.Helper()
	get := p.w.probe.HTTPGet
	if get == nil || get.Scheme != corev1.URISchemeHTTPS || get.Port.StrVal == "" {
		t.Fatalf("%s: readiness probe %+v is not an HTTPS GET of a named port", p.w.name, p.w.probe)
	}
	probe := "https://" + p.w.addr(t, get.Port.StrVal) + get.Path
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		resp, err := c.Get(probe)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%v) before it was ready; its last lines:\n%s", p.w.name, p.cmd.ProcessState, p.output.Last(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after a minute (%v); its last lines:\n%s", p.w.name, err, p.output.Last(40))
		}
	}
}

// e2eHTTPS trusts the tenant CA and expects a certificate for serverName.
func e2eHTTPS(ca *tenantpki.CA, serverName string) *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool(), ServerName: serverName}},
		// The viewer answers with pages; a redirect would be a finding, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func e2eDo(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// e2ePatient is a browser at the viewer: it keeps cookies, sends the public host name, and
// posts forms with the CSRF cookie's token as the viewer's own pages do.
type e2ePatient struct {
	client     *http.Client
	base, host string
}

func e2eNewPatient(t *testing.T, c *http.Client, base, host string) *e2ePatient {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	withJar := *c
	withJar.Jar = jar
	return &e2ePatient{client: &withJar, base: base, host: host}
}

func (p *e2ePatient) send(t *testing.T, method, path string, form url.Values) (int, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		// The client keeps cookies by the request's Host: the public name.
		for _, c := range p.client.Jar.Cookies(&url.URL{Scheme: "https", Host: p.host, Path: path}) {
			if c.Name == "__Host-csrf" {
				form.Set("csrf", c.Value)
			}
		}
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, p.base+path, body)
	req.Host = p.host
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	return e2eDo(t, p.client, req)
}
