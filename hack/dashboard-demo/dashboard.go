package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// dashboard is the part of a Grafana dashboard model (schemaVersion 39) that the picture
// needs: the panels, their layout, their queries and how their values read.
type dashboard struct {
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"` // row, timeseries, bargauge, state-timeline
	Title       string      `json:"title"`
	GridPos     gridPos     `json:"gridPos"`
	Targets     []target    `json:"targets"`
	FieldConfig fieldConfig `json:"fieldConfig"`
	// Panels holds the panels of a collapsed row.
	Panels []panel `json:"panels"`
}

// gridPos places a panel on Grafana's grid: 24 columns, rows of one grid unit.
type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type target struct {
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
	RefID        string `json:"refId"`
}

type fieldConfig struct {
	Defaults struct {
		Unit       string     `json:"unit"`
		Min        *float64   `json:"min"`
		Max        *float64   `json:"max"`
		Mappings   []mapping  `json:"mappings"`
		Thresholds thresholds `json:"thresholds"`
	} `json:"defaults"`
}

// mapping is a value mapping of type "value": the text and colour shown for exact values.
type mapping struct {
	Type    string `json:"type"`
	Options map[string]struct {
		Text  string `json:"text"`
		Color string `json:"color"`
	} `json:"options"`
}

type thresholds struct {
	Steps []struct {
		Color string   `json:"color"`
		Value *float64 `json:"value"` // nil: the base step, below every other
	} `json:"steps"`
}

// loadDashboard reads a dashboard model and lifts the panels of collapsed rows to the top
// level, where Grafana shows them once the row is expanded.
func loadDashboard(path string) (*dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("parse dashboard %s: %w", path, err)
	}
	var flat []panel
	for _, p := range d.Panels {
		inner := p.Panels
		p.Panels = nil
		flat = append(flat, p)
		flat = append(flat, inner...)
	}
	d.Panels = flat
	return &d, nil
}

// variableRef matches a dashboard variable in a query: $name or ${name}, optionally with a
// ${name:format} suffix, which Prometheus queries here do not need.
var variableRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[A-Za-z]+)?\}|\$([A-Za-z0-9_]+)`)

// substitute replaces the dashboard's variables in expr with vars, as Grafana does before it
// sends a query. A variable vars lacks is left as it is, so Prometheus names it in its error.
func substitute(expr string, vars map[string]string) string {
	return variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := variableRef.FindStringSubmatch(ref)
		name := m[1]
		if name == "" {
			name = m[2]
		}
		if v, ok := vars[name]; ok {
			return v
		}
		return ref
	})
}

// legendRef matches {{ label }} in a legend format.
var legendRef = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)

// legend renders a target's legend format with a series' labels; an empty format shows the
// series as Prometheus names it.
func legend(format string, labels map[string]string) string {
	if format == "" || format == "__auto" {
		return seriesName(labels)
	}
	s := legendRef.ReplaceAllStringFunc(format, func(ref string) string {
		return labels[legendRef.FindStringSubmatch(ref)[1]]
	})
	return strings.Join(strings.Fields(s), " ")
}

// seriesName is name{a="x", b="y"}, the way Prometheus prints a series.
func seriesName(labels map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(labels) {
		if k != "__name__" {
			parts = append(parts, fmt.Sprintf("%s=%q", k, labels[k]))
		}
	}
	return labels["__name__"] + "{" + strings.Join(parts, ", ") + "}"
}
