package controllers_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	"k8s.io/apiserver/pkg/endpoints/request"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/securetext/securetext/charts"
)

// The suite's operator runs as the chart's ServiceAccount with the RBAC the chart grants and
// nothing more, so a rule missing from the chart makes a reconcile fail (forbidden) and the
// suite with it. Every request the operator sends is recorded: at the end of the suite,
// reportRBAC names what the API server denied and what the chart grants that was never used.

const (
	// chartRelease and operatorNamespace are the release name and namespace the suite renders
	// the chart for, as `helm install securetext -n securetext-system` would.
	chartRelease      = "securetext"
	operatorNamespace = "securetext-system"
)

var (
	// operatorUser is the chart's ServiceAccount as the API server names it; the suite's
	// operator impersonates it.
	operatorUser string
	// operatorPermissions is everything the chart's bindings grant that ServiceAccount.
	operatorPermissions []permission
	// apiCalls records every request the operator sends to the API server.
	apiCalls = newAPICallLog(os.Stderr)
)

// chartRBACKinds are the rendered objects the suite applies, and whether each is namespaced.
// The rest of the chart (the Deployment, monitoring objects) needs a real cluster.
var chartRBACKinds = map[string]bool{
	"ServiceAccount": true, "Role": true, "RoleBinding": true,
	"ClusterRole": false, "ClusterRoleBinding": false,
}

// expectedUnused explains, keyed by apiCall.String(), each permission the chart grants that
// the suite's operator does not use. reportRBAC lists them on every run, and fails a full run
// that passed but left unused a permission this does not explain: a rule added to the chart
// is either exercised by a test or explained here.
var expectedUnused = explained(map[string][]string{
	"needed where the API server does not serve watch-list: client-go's informers list " +
		"through a watch (sendInitialEvents), as against envtest, and fall back to LIST": {
		"list core/configmaps", "list core/namespaces", "list core/secrets", "list core/serviceaccounts",
		"list core/services", "list apps/deployments", "list autoscaling/horizontalpodautoscalers",
		"list networking.k8s.io/ingresses", "list networking.k8s.io/networkpolicies",
		"list policy/poddisruptionbudgets", "list securetext.io/securetexttenants", "list securetext.io/retentionpolicies",
	},
	"needed when a RetentionPolicy's status is computed unchanged and the cache may lag behind the last status write " +
		"(patchStatusIfChanged reads the server's copy), e.g. after an operator restart; each suite policy changes its status": {
		"get securetext.io/retentionpolicies",
	},
	"needed to prune what Render no longer returns (apply.go); the suite prunes only an autoscaler": {
		"delete core/configmaps", "delete core/serviceaccounts", "delete core/services",
		"delete apps/deployments", "delete autoscaling/horizontalpodautoscalers",
		"delete networking.k8s.io/ingresses", "delete networking.k8s.io/networkpolicies",
		"delete policy/poddisruptionbudgets",
	},
	"needed by the metrics endpoint (main.go, --metrics-secure); the suite serves no metrics": {
		"create authentication.k8s.io/tokenreviews", "create authorization.k8s.io/subjectaccessreviews",
	},
	"needed when an event repeats within minutes (an event series); the suite patches one only by chance": {
		"patch events.k8s.io/events",
	},
})

// explained inverts a table of reasons to the permissions each explains.
func explained(byReason map[string][]string) map[string]string {
	out := map[string]string{}
	for why, perms := range byReason {
		for _, p := range perms {
			out[p] = why
		}
	}
	return out
}

// operatorConfig is how the suite's operator reaches the API server: as the chart's
// ServiceAccount, every request recorded in apiCalls. The test's own client stays admin.
func operatorConfig() *rest.Config {
	cfg := rest.CopyConfig(kube.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: operatorUser}
	cfg.Wrap(apiCalls.wrap)
	return cfg
}

// installChartRBAC renders the chart with its default values and applies, as admin, its
// namespace, ServiceAccount and RBAC objects; it returns once the API server authorizes
// everything the chart grants.
func installChartRBAC(ctx context.Context) error {
	rel, err := charts.Render(chartRelease, operatorNamespace, nil)
	if err != nil {
		return fmt.Errorf("render chart %s: %w", charts.Name, err)
	}
	sa, err := operatorServiceAccount(rel)
	if err != nil {
		return err
	}
	if operatorPermissions, err = grantedTo(rel, operatorNamespace, sa); err != nil {
		return err
	}
	if len(operatorPermissions) == 0 {
		return fmt.Errorf("the chart grants its ServiceAccount %s nothing", sa)
	}
	operatorUser = serviceaccount.MakeUsername(operatorNamespace, sa)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}
	if err := k8s.Create(ctx, ns); err != nil {
		return fmt.Errorf("create namespace %s: %w", operatorNamespace, err)
	}
	for _, o := range rel.Objects {
		namespaced, ok := chartRBACKinds[o.GetKind()]
		if !ok {
			continue
		}
		obj := o.DeepCopy()
		if namespaced && obj.GetNamespace() == "" {
			obj.SetNamespace(operatorNamespace) // as helm install -n does
		}
		if err := k8s.Create(ctx, obj); err != nil {
			return fmt.Errorf("apply the chart's %s/%s: %w", obj.GetKind(), obj.GetName(), err)
		}
	}
	return waitForRBAC(ctx, operatorUser, operatorPermissions)
}

// operatorServiceAccount is the ServiceAccount the chart's operator Deployment runs as.
func operatorServiceAccount(rel *charts.Release) (string, error) {
	var names []string
	for _, o := range rel.Objects {
		if o.GetKind() != "Deployment" {
			continue
		}
		name, _, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName")
		names = append(names, name)
	}
	if len(names) != 1 || names[0] == "" {
		return "", fmt.Errorf("want one Deployment in the chart, with a serviceAccountName; got %q", names)
	}
	if rel.Find("ServiceAccount", names[0]) == nil {
		return "", fmt.Errorf("the chart's Deployment runs as ServiceAccount %s, which the chart does not render", names[0])
	}
	return names[0], nil
}

// grantedTo lists what the chart's bindings grant the ServiceAccount namespace/name: the rules
// of each role a ClusterRoleBinding binds it to, cluster-wide, and of each role a RoleBinding
// binds it to, in the RoleBinding's namespace.
func grantedTo(rel *charts.Release, namespace, name string) ([]permission, error) {
	var out []permission
	for _, o := range rel.Objects {
		var (
			subjects []rbacv1.Subject
			ref      rbacv1.RoleRef
			scope    string
		)
		switch o.GetKind() {
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := fromUnstructured(o, &b); err != nil {
				return nil, err
			}
			subjects, ref = b.Subjects, b.RoleRef
		case "RoleBinding":
			var b rbacv1.RoleBinding
			if err := fromUnstructured(o, &b); err != nil {
				return nil, err
			}
			subjects, ref, scope = b.Subjects, b.RoleRef, cmpOr(o.GetNamespace(), namespace)
		default:
			continue
		}
		if !slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == name && cmpOr(s.Namespace, scope) == namespace
		}) {
			continue
		}
		role := rel.Find(ref.Kind, ref.Name)
		if role == nil {
			return nil, fmt.Errorf("%s/%s binds %s/%s, which the chart does not render", o.GetKind(), o.GetName(), ref.Kind, ref.Name)
		}
		var r rbacv1.ClusterRole // a Role's rules decode the same way
		if err := fromUnstructured(role, &r); err != nil {
			return nil, err
		}
		from := ref.Kind + "/" + ref.Name
		for _, rule := range r.Rules {
			for _, url := range rule.NonResourceURLs {
				for _, v := range rule.Verbs {
					out = append(out, permission{apiCall: apiCall{Verb: v, Resource: url}, From: from})
				}
			}
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						out = append(out, permission{apiCall: apiCall{Verb: v, Group: g, Resource: res, Namespace: scope}, From: from})
					}
				}
			}
		}
	}
	return out, nil
}

func fromUnstructured(o *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
		return fmt.Errorf("decode the chart's %s/%s: %w", o.GetKind(), o.GetName(), err)
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// waitForRBAC waits until the API server's authorizer, whose RBAC cache follows new roles and
// bindings a moment later, allows user everything in perms.
func waitForRBAC(ctx context.Context, user string, perms []permission) error {
	ns, _, err := serviceaccount.SplitUsername(user)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range perms {
		for {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   user,
				Groups: append(serviceaccount.MakeGroupNames(ns), "system:authenticated"),
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: p.Namespace, Verb: p.Verb, Group: p.Group, Resource: p.resource(), Subresource: p.subresource(),
				},
			}}
			if err := k8s.Create(ctx, review); err != nil {
				return fmt.Errorf("review access to %s: %w", p, err)
			}
			if review.Status.Allowed {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the API server still denies %s: %s", p, review.Status.Reason)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// apiCall is what the API server authorizes: a verb on a resource (with its subresource, as
// "securetexttenants/status"), of an API group ("" for core), in a namespace ("" for
// cluster-scoped resources and requests across namespaces); or a verb on a non-resource URL,
// whose Resource is then the path ("/metrics").
type apiCall struct {
	Verb, Group, Resource, Namespace string
}

func (c apiCall) isPath() bool { return strings.HasPrefix(c.Resource, "/") }

func (c apiCall) String() string {
	if c.isPath() {
		return c.Verb + " path " + c.Resource
	}
	group := c.Group
	if group == "" {
		group = "core"
	}
	s := c.Verb + " " + group + "/" + c.Resource
	if c.Namespace != "" {
		s += " in namespace " + c.Namespace
	}
	return s
}

func (c apiCall) resource() string    { r, _, _ := strings.Cut(c.Resource, "/"); return r }
func (c apiCall) subresource() string { _, s, _ := strings.Cut(c.Resource, "/"); return s }

// marker is the controller-gen marker that grants c cluster-wide.
func (c apiCall) marker() string {
	if c.isPath() {
		return fmt.Sprintf("// +kubebuilder:rbac:urls=%s,verbs=%s", c.Resource, c.Verb)
	}
	group := c.Group
	if group == "" {
		group = `""`
	}
	return fmt.Sprintf("// +kubebuilder:rbac:groups=%s,resources=%s,verbs=%s", group, c.Resource, c.Verb)
}

// permission is one verb on one resource that a role grants: cluster-wide if Namespace is
// empty, else in that namespace. Any field may be "*".
type permission struct {
	apiCall
	From string // "ClusterRole/name" or "Role/name"
}

// allows reports whether p grants call.
func (p permission) allows(call apiCall) bool {
	match := func(granted, asked string) bool { return granted == rbacv1.VerbAll || granted == asked }
	return match(p.Verb, call.Verb) && match(p.Group, call.Group) && match(p.Resource, call.Resource) &&
		(p.Namespace == "" || p.Namespace == call.Namespace)
}

// unusedPermissions returns the permissions that allow none of calls.
func unusedPermissions(perms []permission, calls []apiCall) []permission {
	var out []permission
	for _, p := range perms {
		if !slices.ContainsFunc(calls, p.allows) {
			out = append(out, p)
		}
	}
	return out
}

// apiCallLog records the API calls that pass through the transports it wraps: the ones the
// API server authorized, and the ones RBAC denied, each logged to out as it happens so that a
// failing test says which rule is missing.
type apiCallLog struct {
	out        io.Writer
	mu         sync.Mutex
	authorized map[apiCall]int
	denied     map[apiCall]int
}

func newAPICallLog(out io.Writer) *apiCallLog {
	return &apiCallLog{out: out, authorized: map[apiCall]int{}, denied: map[apiCall]int{}}
}

// requestInfos parses request paths as kube-apiserver does.
var requestInfos = &request.RequestInfoFactory{
	APIPrefixes:          sets.String(sets.New("api", "apis")),
	GrouplessAPIPrefixes: sets.String(sets.New("api")),
}

// rbacDenial and rbacPathDenial match the message of a 403 the authorizer sent
// (responsewriters.ForbiddenStatusError), for a resource and a non-resource URL. The message
// follows a prefix that names the object ("secrets \"db\" is forbidden: ").
var (
	rbacDenial     = regexp.MustCompile(`(?:^|: )User "[^"]*" cannot (\S+) resource "([^"]+)" in API group "([^"]*)"(?: in the namespace "([^"]+)"| at the cluster scope)`)
	rbacPathDenial = regexp.MustCompile(`(?:^|: )User "[^"]*" cannot (\S+) path "([^"]+)"`)
)

// wrap is a rest.Config WrapTransport.
func (l *apiCallLog) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		info, err := requestInfos.NewRequestInfo(req)
		if err != nil {
			return resp, nil
		}
		if resp.StatusCode == http.StatusForbidden {
			resp.Body = l.forbidden(req, info, resp.Body)
			return resp, nil
		}
		if info.IsResourceRequest {
			l.record(req, info, resp.StatusCode)
		}
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func callOf(info *request.RequestInfo) apiCall {
	res := info.Resource
	if info.Subresource != "" {
		res += "/" + info.Subresource
	}
	return apiCall{Verb: info.Verb, Group: info.APIGroup, Resource: res, Namespace: info.Namespace}
}

// record notes an authorized call. A PUT or PATCH answered 201 created its object, which the
// API server authorized as a create too.
func (l *apiCallLog) record(req *http.Request, info *request.RequestInfo, status int) {
	call := callOf(info)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.authorized[call]++
	if status == http.StatusCreated && (req.Method == http.MethodPut || req.Method == http.MethodPatch) {
		call.Verb = "create"
		l.authorized[call]++
	}
}

// forbidden records and logs a 403 and returns its body for the caller to read. The call RBAC
// denied is the one the API server names, which for an apply that creates is a create.
func (l *apiCallLog) forbidden(req *http.Request, info *request.RequestInfo, body io.ReadCloser) io.ReadCloser {
	data, _ := io.ReadAll(io.LimitReader(body, 1<<20))
	_ = body.Close()
	msg := strings.TrimSpace(string(data))
	if obj, err := runtime.Decode(clientgoscheme.Codecs.UniversalDeserializer(), data); err == nil {
		if st, ok := obj.(*metav1.Status); ok {
			msg = st.Message
		}
	}
	what := req.Method + " " + req.URL.RequestURI()
	var denied apiCall
	if m := rbacDenial.FindStringSubmatch(msg); m != nil {
		denied = apiCall{Verb: m[1], Group: m[3], Resource: m[2], Namespace: m[4]}
	} else if m := rbacPathDenial.FindStringSubmatch(msg); m != nil {
		denied = apiCall{Verb: m[1], Resource: m[2]}
	} else {
		if info.IsResourceRequest {
			l.record(req, info, http.StatusForbidden) // authorized, then refused for another reason
		}
		fmt.Fprintf(l.out, "forbidden, not by RBAC: %s: %s\n", what, msg)
		return io.NopCloser(bytes.NewReader(data))
	}
	l.mu.Lock()
	l.denied[denied]++
	if call := callOf(info); info.IsResourceRequest && call != denied {
		l.authorized[call]++ // a patch that was allowed, and then denied the create it needed
	}
	l.mu.Unlock()
	fmt.Fprintf(l.out, "forbidden: %s (%s)\n", denied, what)
	return io.NopCloser(bytes.NewReader(data))
}

// snapshot returns the authorized and the denied calls, sorted.
func (l *apiCallLog) snapshot() (authorized, denied []apiCall) {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := func(m map[apiCall]int) []apiCall {
		out := make([]apiCall, 0, len(m))
		for c := range m {
			out = append(out, c)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
		return out
	}
	return keys(l.authorized), keys(l.denied)
}

// reportRBAC writes what the suite learnt about the chart's RBAC to w and returns the suite's
// exit code (code is m.Run's).
func reportRBAC(w io.Writer, code int) int {
	authorized, denied := apiCalls.snapshot()
	return judgeRBAC(w, code, operatorUser, operatorPermissions, authorized, denied, !partialRun())
}

// judgeRBAC reports to w and returns code, or 1: if RBAC denied user anything, or if a full
// run that passed left unused a permission that expectedUnused does not explain.
func judgeRBAC(w io.Writer, code int, user string, perms []permission, authorized, denied []apiCall, full bool) int {
	if len(denied) > 0 {
		fmt.Fprintf(w, "FAIL: the API server denied the operator (%s) these calls; the rules to add:\n", user)
		for _, c := range denied {
			fmt.Fprintf(w, "  %s\t%s\n", c, c.marker())
		}
		code = 1
	}
	unused := unusedPermissions(perms, authorized)
	var unexpected []string
	if len(unused) > 0 {
		fmt.Fprintln(w, "RBAC rules the operator never used in this suite:")
		for _, p := range unused {
			why, ok := expectedUnused[p.apiCall.String()]
			if !ok {
				why = "UNEXPECTED: exercise it in a test, drop it from the chart, or explain it in expectedUnused (rbac_test.go)"
				unexpected = append(unexpected, p.apiCall.String())
			}
			fmt.Fprintf(w, "  %s (%s): %s\n", p.apiCall, p.From, why)
		}
	}
	switch {
	case len(unexpected) == 0:
	case code != 0 || !full:
		fmt.Fprintln(w, "(a partial or failing run: unused rules do not fail it)")
	default:
		fmt.Fprintf(w, "FAIL: the chart grants the operator %d permission(s) no test used and nothing explains: %s\n",
			len(unexpected), strings.Join(unexpected, ", "))
		code = 1
	}
	return code
}

// partialRun reports whether the tests were filtered (-run, -skip), so that some of what the
// operator needs was never exercised.
func partialRun() bool {
	for _, name := range []string{"test.run", "test.skip", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return true
		}
	}
	return false
}

// TestAPICallLog checks what the recorder makes of requests and answers: the verb, group,
// resource and namespace the API server authorizes, and the calls RBAC denied.
func TestAPICallLog(t *testing.T) {
	// denial is the API server's answer when RBAC denies the operator's ServiceAccount.
	denial := func(verb, group, resource, subresource, namespace, name string) *metav1.Status {
		sa := &user.DefaultInfo{Name: "system:serviceaccount:securetext-system:securetext-operator"}
		attrs := authorizer.AttributesRecord{User: sa, Verb: verb, APIGroup: group, Resource: resource,
			Subresource: subresource, Namespace: namespace, Name: name, ResourceRequest: resource != ""}
		if resource == "" {
			attrs.Path = name
		}
		st := responsewriters.ForbiddenStatusError(attrs, "").Status()
		return &st
	}
	terminating := &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden,
		Message: `configmaps "c" is forbidden: unable to create new content in namespace gone because it is being terminated`}
	tests := []struct {
		name       string
		method     string
		url        string
		status     int
		body       *metav1.Status
		protobuf   bool
		authorized []apiCall
		denied     []apiCall
		logged     string
	}{
		{name: "get", method: "GET", url: "/api/v1/namespaces/t/secrets/db", status: 200,
			authorized: []apiCall{{Verb: "get", Resource: "secrets", Namespace: "t"}}},
		{name: "list", method: "GET", url: "/apis/apps/v1/namespaces/t/deployments?labelSelector=a%3Db", status: 200,
			authorized: []apiCall{{Verb: "list", Group: "apps", Resource: "deployments", Namespace: "t"}}},
		{name: "watch-list across namespaces", method: "GET", status: 200,
			url:        "/api/v1/secrets?allowWatchBookmarks=true&sendInitialEvents=true&watch=true",
			authorized: []apiCall{{Verb: "watch", Resource: "secrets"}}},
		{name: "cluster-scoped", method: "GET", status: 200,
			url:        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/securetexttenants.securetext.io",
			authorized: []apiCall{{Verb: "get", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}}},
		{name: "a namespace is its own namespace", method: "DELETE", url: "/api/v1/namespaces/securetext-a", status: 200,
			authorized: []apiCall{{Verb: "delete", Resource: "namespaces", Namespace: "securetext-a"}}},
		{name: "status subresource", method: "PATCH", url: "/apis/securetext.io/v1alpha1/securetexttenants/a/status", status: 200,
			authorized: []apiCall{{Verb: "patch", Group: "securetext.io", Resource: "securetexttenants/status"}}},
		{name: "an apply that creates is a create too", method: "PATCH", status: 201,
			url: "/apis/networking.k8s.io/v1/namespaces/t/networkpolicies/deny?fieldManager=m&force=true",
			authorized: []apiCall{{Verb: "patch", Group: "networking.k8s.io", Resource: "networkpolicies", Namespace: "t"},
				{Verb: "create", Group: "networking.k8s.io", Resource: "networkpolicies", Namespace: "t"}}},
		{name: "update", method: "PUT", url: "/api/v1/namespaces/t/configmaps/c", status: 200,
			authorized: []apiCall{{Verb: "update", Resource: "configmaps", Namespace: "t"}}},
		{name: "create", method: "POST", url: "/apis/events.k8s.io/v1/namespaces/default/events", status: 201,
			authorized: []apiCall{{Verb: "create", Group: "events.k8s.io", Resource: "events", Namespace: "default"}}},
		{name: "discovery is not a resource", method: "GET", url: "/apis/apps/v1", status: 200},
		{name: "a refused call is recorded as refused, not as used", method: "GET", status: 403,
			url:    "/apis/securetext.io/v1alpha1/securetexttenants?watch=true",
			body:   denial("watch", "securetext.io", "securetexttenants", "", "", ""),
			denied: []apiCall{{Verb: "watch", Group: "securetext.io", Resource: "securetexttenants"}},
			logged: "forbidden: watch securetext.io/securetexttenants (GET /apis/securetext.io/v1alpha1/securetexttenants?watch=true)\n"},
		{name: "a protobuf answer", method: "GET", url: "/api/v1/namespaces/t/secrets/db", status: 403, protobuf: true,
			body:   denial("get", "", "secrets", "", "t", "db"),
			denied: []apiCall{{Verb: "get", Resource: "secrets", Namespace: "t"}},
			logged: "forbidden: get core/secrets in namespace t (GET /api/v1/namespaces/t/secrets/db)\n"},
		{name: "an apply allowed to patch but not to create", method: "PATCH", status: 403,
			url:        "/apis/apps/v1/namespaces/t/deployments/gateway",
			body:       denial("create", "apps", "deployments", "", "t", "gateway"),
			authorized: []apiCall{{Verb: "patch", Group: "apps", Resource: "deployments", Namespace: "t"}},
			denied:     []apiCall{{Verb: "create", Group: "apps", Resource: "deployments", Namespace: "t"}},
			logged:     "forbidden: create apps/deployments in namespace t (PATCH /apis/apps/v1/namespaces/t/deployments/gateway)\n"},
		{name: "a subresource denied", method: "PUT", status: 403,
			url:    "/apis/securetext.io/v1alpha1/securetexttenants/a/status",
			body:   denial("update", "securetext.io", "securetexttenants", "status", "", "a"),
			denied: []apiCall{{Verb: "update", Group: "securetext.io", Resource: "securetexttenants/status"}}},
		{name: "a non-resource URL denied", method: "GET", url: "/version", status: 403,
			body:   denial("get", "", "", "", "", "/version"),
			denied: []apiCall{{Verb: "get", Resource: "/version"}},
			logged: "forbidden: get path /version (GET /version)\n"},
		{name: "forbidden, but not by RBAC", method: "POST", url: "/api/v1/namespaces/gone/configmaps", status: 403,
			body:       terminating,
			authorized: []apiCall{{Verb: "create", Resource: "configmaps", Namespace: "gone"}},
			logged:     "forbidden, not by RBAC: POST /api/v1/namespaces/gone/configmaps: configmaps \"c\" is forbidden: unable to create new content in namespace gone because it is being terminated\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != nil {
				mediaType := runtime.ContentTypeJSON
				if tt.protobuf {
					mediaType = runtime.ContentTypeProtobuf
				}
				info, ok := runtime.SerializerInfoForMediaType(clientgoscheme.Codecs.SupportedMediaTypes(), mediaType)
				if !ok {
					t.Fatalf("no serializer for %s", mediaType)
				}
				var err error
				body, err = runtime.Encode(clientgoscheme.Codecs.EncoderForVersion(info.Serializer, metav1.Unversioned), tt.body)
				if err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			calls := newAPICallLog(&out)
			rt := calls.wrap(roundTripper(func(*http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: tt.status, Body: io.NopCloser(bytes.NewReader(body))}, nil
			}))
			req, err := http.NewRequest(tt.method, "https://127.0.0.1:6443"+tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := io.ReadAll(resp.Body); !bytes.Equal(got, body) {
				t.Errorf("the caller reads %q, want the API server's %q", got, body)
			}
			authorized, denied := calls.snapshot()
			sortCalls(tt.authorized)
			if !slices.Equal(authorized, tt.authorized) {
				t.Errorf("authorized %v, want %v", authorized, tt.authorized)
			}
			if !slices.Equal(denied, tt.denied) {
				t.Errorf("denied %v, want %v", denied, tt.denied)
			}
			if tt.logged != "" && out.String() != tt.logged {
				t.Errorf("logged %q, want %q", out.String(), tt.logged)
			}
		})
	}
}

func sortCalls(calls []apiCall) {
	sort.Slice(calls, func(i, j int) bool { return calls[i].String() < calls[j].String() })
}

// TestJudgeRBAC checks that the end of the suite fails on a denied call and on a granted
// permission that nothing used or explains, but not on a partial or already failing run.
func TestJudgeRBAC(t *testing.T) {
	const ns = "t"
	perm := func(verb, group, resource, namespace string) permission {
		return permission{apiCall: apiCall{Verb: verb, Group: group, Resource: resource, Namespace: namespace}, From: "Role/x"}
	}
	perms := []permission{
		perm("get", "", "secrets", ""),
		perm("*", "apps", "deployments", ""),
		perm("create", "coordination.k8s.io", "leases", operatorNamespace),
		perm("create", "authentication.k8s.io", "tokenreviews", ""), // explained in expectedUnused
	}
	used := []apiCall{
		{Verb: "get", Resource: "secrets", Namespace: ns},
		{Verb: "patch", Group: "apps", Resource: "deployments", Namespace: ns},
		{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: operatorNamespace},
	}
	leaseElsewhere := slices.Clone(used)
	leaseElsewhere[2].Namespace = ns
	denied := []apiCall{{Verb: "create", Group: "apps", Resource: "deployments", Namespace: ns}}
	tests := []struct {
		name         string
		code         int
		used, denied []apiCall
		full         bool
		want         int
		wantOut      string
	}{
		{name: "all used or explained", used: used, full: true, want: 0, wantOut: "create authentication.k8s.io/tokenreviews (Role/x): needed by the metrics endpoint"},
		{name: "a denied call", used: used, denied: denied, full: true, want: 1, wantOut: "// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=create"},
		{name: "unused and unexplained", used: leaseElsewhere, full: true, want: 1, wantOut: "UNEXPECTED"},
		{name: "unused in a partial run", used: leaseElsewhere, want: 0, wantOut: "a partial or failing run"},
		{name: "unused in a failing run", code: 1, used: leaseElsewhere, full: true, want: 1, wantOut: "a partial or failing run"},
		{name: "nothing used", full: true, want: 1, wantOut: "get core/secrets (Role/x)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if got := judgeRBAC(&out, tt.code, "u", perms, tt.used, tt.denied, tt.full); got != tt.want {
				t.Errorf("exit code %d, want %d; report:\n%s", got, tt.want, out.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("report lacks %q:\n%s", tt.wantOut, out.String())
			}
		})
	}
}

// TestChartGrants checks that the suite reads the chart's grants: the ClusterRole, cluster-wide,
// and the leader-election Role, in the release namespace.
func TestChartGrants(t *testing.T) {
	want := []apiCall{
		{Verb: "patch", Group: "securetext.io", Resource: "securetexttenants/status"},
		{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: operatorNamespace},
	}
	for _, c := range want {
		if !slices.ContainsFunc(operatorPermissions, func(p permission) bool { return p.apiCall == c }) {
			t.Errorf("the chart grants no %s: %v", c, operatorPermissions)
		}
	}
	for _, p := range operatorPermissions {
		if strings.HasSuffix(p.From, "-metrics-reader") {
			t.Errorf("%s is the metrics scrapers', not the operator's", p.From)
		}
	}
}
