package charts_test

// The chart's alerts (files/prometheus-rules.yaml) and Grafana dashboard
// (files/grafana-dashboard.json) must parse, and must name only series that the operator and
// the workloads export: an alert on a metric nobody exports never fires, and says nothing
// while it does not. The exported series are read from the real collectors: the operator's
// (controllers.MetricCollectors, registered on controller-runtime's registry) and the ones the
// workloads' constructors register.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/helpers/templates"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/securetext/securetext/charts"
	"github.com/securetext/securetext/controllers"
	"github.com/securetext/securetext/workloads/gateway"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/retention"
	"github.com/securetext/securetext/workloads/viewer"
)

// scrapeLabels are the labels Prometheus gives every series it scrapes, by source: the
// target's, and for the workloads the relabelings of the chart's PodMonitor, which copies the
// pods' tenant and component labels.
var scrapeLabels = map[string][]string{
	"operator": {"namespace", "pod", "container", "instance", "job", "service", "endpoint"},
	"workload": {"namespace", "pod", "container", "instance", "job", "endpoint", "tenant", "component"},
}

// exportedMetric is one metric family a component exports.
type exportedMetric struct {
	source    string
	histogram bool
	labels    []string // its own labels, constant and variable
}

// catalog maps each exported metric name to what exports it.
type catalog map[string]exportedMetric

// recordingRegisterer registers on a real registry, which checks the collectors as the
// components' own registries do, and keeps each collector so that its descriptors can be read:
// a vector with no series yet gathers nothing.
type recordingRegisterer struct {
	reg        *prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recordingRegisterer) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// descPattern reads a descriptor's name and labels from Desc.String, the only way client_golang
// shows them.
var descPattern = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: .*, constLabels: \{(.*)\}, variableLabels: \{([^{}]*)\}\}$`)

// add describes each collector into c, as exported by source.
func (c catalog) add(t *testing.T, source string, collectors ...prometheus.Collector) {
	t.Helper()
	for _, col := range collectors {
		histogram := false
		switch col.(type) {
		case *prometheus.HistogramVec, prometheus.Histogram:
			histogram = true
		}
		ch := make(chan *prometheus.Desc)
		go func() { col.Describe(ch); close(ch) }()
		for d := range ch {
			if err := d.Err(); err != nil {
				t.Fatalf("%s: descriptor %s: %v", source, d, err)
			}
			m := descPattern.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("%s: cannot read descriptor %s", source, d)
			}
			name, err := strconv.Unquote(m[1])
			if err != nil {
				t.Fatalf("%s: descriptor name %s: %v", source, m[1], err)
			}
			var labels []string
			for _, cl := range strings.Split(m[2], ",") {
				if n, _, ok := strings.Cut(cl, "="); ok {
					labels = append(labels, n)
				}
			}
			for _, vl := range strings.Split(m[3], ",") {
				if vl = strings.TrimSuffix(strings.TrimPrefix(vl, "c("), ")"); vl != "" {
					labels = append(labels, vl)
				}
			}
			e := c[name]
			if e.source != "" && e.source != source {
				t.Fatalf("metric %s is exported by both %s and %s", name, e.source, source)
			}
			c[name] = exportedMetric{source: source, histogram: histogram, labels: append(e.labels, labels...)}
		}
	}
}

// exportedCatalog is every metric the operator and the workloads export.
func exportedCatalog(t *testing.T) catalog {
	t.Helper()
	c := catalog{}

	// The operator: its collectors must be the ones its init registered on controller-runtime's
	// registry, which its metrics endpoint serves.
	for _, col := range controllers.MetricCollectors() {
		var are prometheus.AlreadyRegisteredError
		err := metrics.Registry.Register(col)
		if err == nil {
			metrics.Registry.Unregister(col)
			t.Fatalf("an operator collector is not registered on controller-runtime's registry")
		}
		if !errors.As(err, &are) || are.ExistingCollector != col {
			t.Fatalf("registering an operator collector again: %v, want AlreadyRegisteredError for the same collector", err)
		}
	}
	c.add(t, "operator", controllers.MetricCollectors()...)

	// The workloads, each through the constructor its process calls.
	for _, w := range []struct {
		source   string
		register func(prometheus.Registerer) error
	}{
		{"gateway", func(r prometheus.Registerer) error {
			gateway.NewMetrics(r)
			retention.NewMetrics(r)               // the retention sweeper's, on the gateway's registry
			return gateway.RegisterOutbox(r, nil) // Describe does not read the store
		}},
		{"viewer", func(r prometheus.Registerer) error { viewer.NewMetrics(r); return nil }},
		{"keystore", func(r prometheus.Registerer) error { keystore.NewMetrics(r); return nil }},
	} {
		rec := &recordingRegisterer{reg: prometheus.NewPedanticRegistry()}
		if err := w.register(rec); err != nil {
			t.Fatalf("%s: %v", w.source, err)
		}
		c.add(t, w.source, rec.collectors...)
	}
	return c
}

var promqlParser = parser.NewParser(parser.Options{})

// resolve returns the exported metric a series name belongs to (the name itself, or a
// histogram's _bucket, _sum or _count series) and the labels its scraped series have.
func (c catalog) resolve(name string) (exportedMetric, []string, bool) {
	m, ok := c[name]
	var extra []string
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, cut := strings.CutSuffix(name, suffix); !ok && cut && c[base].histogram {
			m, ok = c[base], true
			if suffix == "_bucket" {
				extra = []string{"le"}
			}
		}
	}
	if !ok {
		return exportedMetric{}, nil, false
	}
	scraped := scrapeLabels["workload"]
	if m.source == "operator" {
		scraped = scrapeLabels["operator"]
	}
	return m, slices.Concat(m.labels, extra, scraped), true
}

// checkExpr parses a PromQL expression and returns what is wrong with it: a parse error, a
// selector without an exact metric name, a metric nobody exports, or a label that the selected
// metrics do not have (in a matcher, by (…) or on (…)).
func (c catalog) checkExpr(expr string) []string {
	root, err := promqlParser.ParseExpr(expr)
	if err != nil {
		return []string{"does not parse: " + err.Error()}
	}
	var problems []string
	parser.Inspect(root, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			name := n.Name
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					if m.Type.String() != "=" {
						problems = append(problems, fmt.Sprintf("%s selects metrics by a pattern; name one", n))
					}
					name = m.Value
				}
			}
			if name == "" {
				problems = append(problems, fmt.Sprintf("%s names no metric", n))
				return nil
			}
			_, labels, ok := c.resolve(name)
			if !ok {
				problems = append(problems, fmt.Sprintf("metric %s is not exported by the operator or the workloads", name))
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel && !slices.Contains(labels, m.Name) {
					problems = append(problems, fmt.Sprintf("%s: metric %s has no label %s (it has %v)", n, name, m.Name, labels))
				}
			}
		case *parser.AggregateExpr:
			if !n.Without {
				problems = append(problems, c.checkLabels(n.Expr, n.Grouping, "by")...)
			}
		case *parser.BinaryExpr:
			if vm := n.VectorMatching; vm != nil && vm.On {
				problems = append(problems, c.checkLabels(n.LHS, vm.MatchingLabels, "on")...)
				problems = append(problems, c.checkLabels(n.RHS, vm.MatchingLabels, "on")...)
			}
		}
		return nil
	})
	return problems
}

// checkLabels says which of names no metric selected under node has.
func (c catalog) checkLabels(node parser.Node, names []string, clause string) []string {
	var have []string
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
			if _, labels, ok := c.resolve(name); ok {
				have = append(have, labels...)
			}
		}
		return nil
	})
	var problems []string
	for _, l := range names {
		if !slices.Contains(have, l) {
			problems = append(problems, fmt.Sprintf("%s (%s): no selected metric has label %s", clause, strings.Join(names, ", "), l))
		}
	}
	return problems
}

// TestMetricCatalogCheckExpr proves that checkExpr finds what it is for, on expressions made
// to be wrong, so that a passing TestPrometheusRuleNamesExportedMetrics means something.
func TestMetricCatalogCheckExpr(t *testing.T) {
	c := exportedCatalog(t)
	for _, tc := range []struct {
		expr string
		want string // a substring of the problem; "" for none
	}{
		{`max by (tenant) (securetext_operator_tenant_condition{type="Ready"})`, ""},
		{`histogram_quantile(0.99, sum by (le, operation) (rate(securetext_keystore_request_duration_seconds_bucket[5m])))`, ""},
		{`sum by (namespace) (rate(securetext_sms_sends_total{result="failed"}[5m]))`, ""},
		{`securetext_operator_certificate_expiry_timestamp_seconds - time() < 86400`, ""},
		{`sum(rate(securetext_gateway_messages_accepted[5m]))`, "securetext_gateway_messages_accepted is not exported"},
		{`securetext_outbox_oldest_pending_seconds > 600`, "securetext_outbox_oldest_pending_seconds is not exported"},
		{`securetext_viewer_lockouts_total_bucket`, "securetext_viewer_lockouts_total_bucket is not exported"},
		{`rate(securetext_sms_sends_total{reslt="failed"}[5m])`, "has no label reslt"},
		{`sum by (reason) (securetext_viewer_logins_total)`, "no selected metric has label reason"},
		{`securetext_viewer_logins_total and on (provider) securetext_viewer_lockouts_total`, "no selected metric has label provider"},
		{`securetext_operator_tenant_condition{component="viewer"}`, "has no label component"},
		{`sum by (tenant, namespace) (rate(securetext_keystore_request_keys_count{tenant="acme"}[5m]))`, ""},
		{`securetext_keystore_request_keys_sum{le="1"}`, "has no label le"},
		{`{__name__=~"securetext_.*"}`, "by a pattern"},
		{`sum(rate(securetext_sms_sends_total[5m])`, "does not parse"},
	} {
		problems := c.checkExpr(tc.expr)
		switch {
		case tc.want == "" && len(problems) > 0:
			t.Errorf("%s: %v, want no problem", tc.expr, problems)
		case tc.want != "" && !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }):
			t.Errorf("%s: %v, want a problem with %q", tc.expr, problems, tc.want)
		}
	}
}

func readChartFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(t), "files", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ruleFile is a PrometheusRule's spec, as Prometheus' rule files have it.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// loadRules reads files/prometheus-rules.yaml; a field Prometheus does not know is an error.
func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var f ruleFile
	if err := yaml.UnmarshalStrict(readChartFile(t, "prometheus-rules.yaml"), &f); err != nil {
		t.Fatalf("files/prometheus-rules.yaml: %v", err)
	}
	if len(f.Groups) == 0 {
		t.Fatal("files/prometheus-rules.yaml has no groups")
	}
	return f
}

// TestPrometheusRuleFile: every rule is an alert whose expression parses, whose for parses
// as a duration, with a severity, a summary and a description; the annotations expand as
// Prometheus expands them for an alert, using only labels the alert's series have.
func TestPrometheusRuleFile(t *testing.T) {
	c := exportedCatalog(t)
	seen := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				t.Errorf("group %s: recording rule %s: the chart ships alerts only", g.Name, r.Record)
				continue
			}
			if !strings.HasPrefix(name, "SecureText") {
				t.Errorf("%s: alert names start with SecureText", name)
			}
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: expr: %v", name, err)
				continue
			}
			if expr.Type() != parser.ValueTypeVector {
				t.Errorf("%s: expr is a %s, want an instant vector", name, expr.Type())
			}
			if d, err := model.ParseDuration(r.For); err != nil || time.Duration(d) > 2*time.Hour {
				t.Errorf("%s: for %q: %v; want a duration of at most 2h", name, r.For, err)
			}
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", name, sev)
			}
			if key := name + "/" + r.Labels["severity"]; seen[key] {
				t.Errorf("%s: two rules with severity %s", name, r.Labels["severity"])
			} else {
				seen[key] = true
			}
			labels := map[string]string{}
			for _, l := range c.outputLabels(expr) {
				labels[l] = "sample-" + l
			}
			for _, a := range []string{"summary", "description"} {
				text := r.Annotations[a]
				if strings.TrimSpace(text) == "" {
					t.Errorf("%s: no %s annotation", name, a)
					continue
				}
				if got, err := expandAnnotation(name, text, labels); err != nil {
					t.Errorf("%s: %s: %v (the alert's labels: %v)", name, a, err, slices.Sorted(maps.Keys(labels)))
				} else if strings.Contains(got, "{{") || strings.Contains(got, "<no value>") {
					t.Errorf("%s: %s expands to %q", name, a, got)
				}
			}
			desc := r.Annotations["description"]
			if !strings.Contains(desc, "{{ $labels.tenant }}") || !strings.Contains(desc, "kubectl ") {
				t.Errorf("%s: the description must name the tenant and say what to run", name)
			}
		}
	}
	for _, want := range []string{"SecureTextTenantNotReady", "SecureTextVaultNotReady", "SecureTextOutboxStalled",
		"SecureTextSMSFailureRate", "SecureTextAuditCheckpointRefused", "SecureTextLockoutSpike", "SecureTextCertificateExpiring"} {
		if !seen[want+"/critical"] && !seen[want+"/warning"] {
			t.Errorf("no alert %s", want)
		}
	}
}

// outputLabels are the labels of the series an expression returns, as far as alerts need:
// an aggregation's by (…), a binary operation's left side (or its vector side), a function's
// vector argument, a selector's metric and target labels.
func (c catalog) outputLabels(e parser.Node) []string {
	switch n := e.(type) {
	case *parser.AggregateExpr:
		if !n.Without {
			return n.Grouping
		}
		return slices.DeleteFunc(c.outputLabels(n.Expr), func(l string) bool { return slices.Contains(n.Grouping, l) })
	case *parser.BinaryExpr:
		if n.LHS.Type() == parser.ValueTypeScalar {
			return c.outputLabels(n.RHS)
		}
		out := c.outputLabels(n.LHS)
		if n.VectorMatching != nil && n.VectorMatching.Card == parser.CardManyToOne {
			out = append(out, n.VectorMatching.Include...)
		}
		return out
	case *parser.ParenExpr:
		return c.outputLabels(n.Expr)
	case *parser.StepInvariantExpr:
		return c.outputLabels(n.Expr)
	case *parser.SubqueryExpr:
		return c.outputLabels(n.Expr)
	case *parser.MatrixSelector:
		return c.outputLabels(n.VectorSelector)
	case *parser.Call:
		for _, a := range n.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return c.outputLabels(a)
			}
		}
	case *parser.VectorSelector:
		if _, labels, ok := c.resolve(n.Name); ok {
			return labels
		}
	}
	return nil
}

// prometheusTemplateFuncs are the functions Prometheus gives alert templates
// (github.com/prometheus/prometheus/template), so that a template calling another fails to
// parse. The ones the rules use do what Prometheus' do; the others are stand-ins.
func prometheusTemplateFuncs() template.FuncMap {
	fm := template.FuncMap{
		"humanizeDuration": templates.HumanizeDuration,
		"humanize": func(v any) (string, error) {
			f, err := templates.ConvertToFloat(v)
			return strconv.FormatFloat(f, 'g', 4, 64), err
		},
		"humanizePercentage": func(v any) (string, error) {
			f, err := templates.ConvertToFloat(v)
			return strconv.FormatFloat(f*100, 'g', 4, 64) + "%", err
		},
	}
	for _, name := range []string{"query", "first", "label", "value", "strvalue", "args", "reReplaceAll", "safeHtml",
		"match", "title", "toUpper", "toLower", "graphLink", "tableLink", "sortByLabel", "stripPort", "stripDomain",
		"humanize1024", "humanizeTimestamp", "toTime", "toDuration", "now", "pathPrefix", "externalURL",
		"parseDuration", "urlQueryEscape"} {
		fm[name] = func(...any) (string, error) { return "", fmt.Errorf("%s: not a function these tests expand", name) }
	}
	return fm
}

// expandAnnotation expands an annotation as Prometheus does for a firing alert with labels and
// a value: with $labels and $value defined first. A label the series lacks is an error.
func expandAnnotation(alert, text string, labels map[string]string) (string, error) {
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	tmpl, err := template.New("__alert_" + alert).Funcs(prometheusTemplateFuncs()).Option("missingkey=error").Parse(defs + text)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	err = tmpl.Execute(&out, struct {
		Labels, ExternalLabels map[string]string
		ExternalURL            string
		Value                  float64
	}{labels, map[string]string{}, "", 12345})
	return out.String(), err
}

// TestPrometheusRuleNamesExportedMetrics: every alert selects only metrics and labels the
// operator or the workloads export.
func TestPrometheusRuleNamesExportedMetrics(t *testing.T) {
	c := exportedCatalog(t)
	used := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			for _, p := range c.checkExpr(r.Expr) {
				t.Errorf("%s: %s", r.Alert, p)
			}
			for _, name := range metricNames(t, r.Expr) {
				if m, _, ok := c.resolve(name); ok {
					used[m.source] = true
				}
			}
		}
	}
	for _, source := range []string{"operator", "gateway", "viewer", "keystore"} {
		if !used[source] {
			t.Errorf("no alert on the %s's metrics", source)
		}
	}
}

func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	root, err := promqlParser.ParseExpr(expr)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	parser.Inspect(root, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// dashboard is what the tests read of a Grafana dashboard.
type dashboard struct {
	UID           string                    `json:"uid"`
	Title         string                    `json:"title"`
	SchemaVersion int                       `json:"schemaVersion"`
	Panels        []panel                   `json:"panels"`
	Templating    struct{ List []variable } `json:"templating"`
}

type panel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Datasource *datasourceRef            `json:"datasource"`
	GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readChartFile(t, "grafana-dashboard.json"), &d); err != nil {
		t.Fatalf("files/grafana-dashboard.json: %v", err)
	}
	return d
}

// allPanels flattens rows: the panels of a collapsed row are nested in it.
func (d dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// dashboardVariables stand in for the dashboard's variables when a query is parsed.
var dashboardVariables = strings.NewReplacer(
	"$__rate_interval", "5m", "${__rate_interval}", "5m", "$__interval", "1m", "$__range", "1h",
	"${tenant}", ".*", "$tenant", ".*",
)

// dashboardExpr is a panel's or variable's query as PromQL, or what is wrong with it.
func dashboardExpr(expr string) (string, error) {
	promQL := dashboardVariables.Replace(expr)
	if i := strings.Index(promQL, "$"); i >= 0 {
		return "", fmt.Errorf("uses an unknown variable at %q", promQL[i:])
	}
	return promQL, nil
}

// TestDashboardFile: the dashboard decodes, has a uid and a title, a Prometheus data source
// variable that every panel and query uses, unique panel ids, a place for every panel, and
// at least one query in every panel that is not a row.
func TestDashboardFile(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title != "SecureText" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d; want a uid, title SecureText, schemaVersion 36 or later", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds := vars["datasource"]; ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf("variable datasource: %+v, want a prometheus data source variable", ds)
	}
	if v, ok := vars["tenant"]; !ok || v.Type != "query" {
		t.Error("no query variable tenant")
	}
	wantDS := func(where string, ds *datasourceRef) {
		if ds == nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
			t.Errorf("%s: data source %+v, want the ${datasource} variable", where, ds)
		}
	}
	ids := map[int]string{}
	for _, p := range d.allPanels() {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 {
			t.Errorf("%s: no id", where)
		} else if other, ok := ids[p.ID]; ok {
			t.Errorf("%s: id also used by %q", where, other)
		}
		ids[p.ID] = p.Title
		if p.Title == "" || p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: needs a title and a gridPos inside the 24 columns (%+v)", where, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		wantDS(where, p.Datasource)
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: query %q with refId %q: want an expression and a refId of its own", where, tg.Expr, tg.RefID)
			}
			refs[tg.RefID] = true
			wantDS(where+" query "+tg.RefID, tg.Datasource)
		}
	}
}

// labelValues matches Grafana's label_values(<selector>, <label>) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// TestDashboardNamesExportedMetrics: every panel query and variable query parses as PromQL
// and selects only metrics and labels the operator or the workloads export.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	c := exportedCatalog(t)
	d := loadDashboard(t)
	var exprs []string
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			where := fmt.Sprintf("panel %q query %s", p.Title, tg.RefID)
			promQL, err := dashboardExpr(tg.Expr)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			exprs = append(exprs, promQL)
			for _, problem := range c.checkExpr(promQL) {
				t.Errorf("%s: %s", where, problem)
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, q.Query)
			continue
		}
		selector, err := dashboardExpr(m[1])
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		for _, problem := range c.checkExpr(selector) {
			t.Errorf("variable %s: %s", v.Name, problem)
		}
		for _, problem := range c.checkLabels(mustParse(t, selector), []string{m[2]}, "label_values") {
			t.Errorf("variable %s: %s", v.Name, problem)
		}
	}
	if len(exprs) < 20 {
		t.Errorf("only %d panel queries", len(exprs))
	}
}

func mustParse(t *testing.T, expr string) parser.Expr {
	t.Helper()
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// monitoringValues turn on the PrometheusRule and the dashboard.
func monitoringValues(dashboardNamespace string) map[string]any {
	return map[string]any{"monitoring": map[string]any{
		"prometheusRule":   map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
		"grafanaDashboard": map[string]any{"enabled": true, "labels": map[string]any{"grafana_dashboard": "1"}, "namespace": dashboardNamespace},
	}}
}

// TestMonitoringRendersFilesVerbatim: with monitoring on, the chart renders a PrometheusRule
// whose spec is the rule file exactly (Prometheus' {{ }} untouched by Helm) and a dashboard
// ConfigMap that holds the dashboard JSON exactly, both with the labels the values give.
func TestMonitoringRendersFilesVerbatim(t *testing.T) {
	rel, err := charts.Render("securetext", "securetext-system", monitoringValues("grafana"), "monitoring.coreos.com/v1")
	if err != nil {
		t.Fatal(err)
	}
	rule := rel.Find("PrometheusRule", "securetext-operator")
	if rule == nil {
		t.Fatalf("no PrometheusRule securetext-operator in %v", rel.Kinds())
	}
	if rule.GetAPIVersion() != "monitoring.coreos.com/v1" || rule.GetNamespace() != "securetext-system" ||
		rule.GetLabels()["release"] != "kube-prometheus-stack" || rule.GetLabels()["app.kubernetes.io/name"] != "securetext-operator" {
		t.Errorf("PrometheusRule %s in %q with labels %v", rule.GetAPIVersion(), rule.GetNamespace(), rule.GetLabels())
	}
	var file map[string]any
	if err := yaml.Unmarshal(readChartFile(t, "prometheus-rules.yaml"), &file); err != nil {
		t.Fatal(err)
	}
	if got, want := mustJSON(t, rule.Object["spec"]), mustJSON(t, file); got != want {
		t.Errorf("the PrometheusRule's spec differs from files/prometheus-rules.yaml:\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(mustJSON(t, rule.Object["spec"]), "{{ $labels.tenant }}") {
		t.Error("the PrometheusRule lost Prometheus' {{ $labels.tenant }}")
	}

	cm := rel.Find("ConfigMap", "securetext-operator-dashboard")
	if cm == nil {
		t.Fatalf("no ConfigMap securetext-operator-dashboard in %v", rel.Kinds())
	}
	if cm.GetNamespace() != "grafana" || cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap in %q with labels %v, want namespace grafana and grafana_dashboard=1", cm.GetNamespace(), cm.GetLabels())
	}
	data, _ := cm.Object["data"].(map[string]any)
	if got, want := data["securetext.json"], string(readChartFile(t, "grafana-dashboard.json")); got != want {
		t.Errorf("the ConfigMap's securetext.json differs from files/grafana-dashboard.json (%d bytes, want %d)", len(fmt.Sprint(got)), len(want))
	}

	// The dashboard's namespace defaults to the release's.
	rel, err = charts.Render("securetext", "securetext-system", monitoringValues(""), "monitoring.coreos.com/v1")
	if err != nil {
		t.Fatal(err)
	}
	if cm := rel.Find("ConfigMap", "securetext-operator-dashboard"); cm == nil || cm.GetNamespace() != "securetext-system" {
		t.Errorf("without monitoring.grafanaDashboard.namespace: %v, want the dashboard in securetext-system", rel.Kinds())
	}
}

// TestMonitoringOffByDefault: neither object is rendered unless asked for.
func TestMonitoringOffByDefault(t *testing.T) {
	rel, err := charts.Render("securetext", "securetext-system", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range rel.Kinds() {
		if strings.HasPrefix(k, "PrometheusRule/") || k == "ConfigMap/securetext-operator-dashboard" {
			t.Errorf("%s rendered with the default values", k)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
