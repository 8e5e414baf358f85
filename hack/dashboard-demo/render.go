package main

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Grafana's grid: 24 columns; a grid unit is 30 px high with 8 px between panels.
const (
	gridColumns = 24
	gridUnit    = 30
	gridGap     = 8
	pagePad     = 16
	headerH     = 56 // the bar with the title, the variable and the time range
	titleH      = 32 // a panel's title bar
)

// Grafana's dark theme.
const (
	colorPage   = "#111217"
	colorPanel  = "#181b1f"
	colorBorder = "#2c3235"
	colorText   = "#ccccdc"
	colorMuted  = "#8e8e9a"
	colorGrid   = "#25282d"
)

// palette is Grafana's "classic" series palette, in its order.
var palette = []string{"#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#FADE2A", "#37872D", "#C4162A", "#1F60C4", "#FA6400"}

// namedColors are the colour names of Grafana's theme that dashboards use.
var namedColors = map[string]string{
	"red": "#F2495C", "green": "#73BF69", "orange": "#FF9830", "yellow": "#FADE2A",
	"blue": "#5794F2", "purple": "#B877D9", "text": colorText,
}

func themeColor(c string) string {
	if v, ok := namedColors[c]; ok {
		return v
	}
	return c
}

// rect is a box in pixels.
type rect struct{ X, Y, W, H float64 }

// panelRect is where gridPos puts a panel on a page width px wide: the 24 columns share the
// width less the page padding, and neighbours keep gridGap apart, as Grafana lays them out.
func panelRect(g gridPos, width float64) rect {
	col := (width - 2*pagePad + gridGap) / gridColumns
	return rect{
		X: pagePad + float64(g.X)*col,
		Y: headerH + float64(g.Y)*(gridUnit+gridGap),
		W: float64(g.W)*col - gridGap,
		H: float64(g.H)*(gridUnit+gridGap) - gridGap,
	}
}

// pageHeight is the height of a page that holds every panel.
func pageHeight(panels []panel, width float64) int {
	bottom := 0.0
	for _, p := range panels {
		r := panelRect(p.GridPos, width)
		bottom = max(bottom, r.Y+r.H)
	}
	return int(math.Ceil(bottom + pagePad))
}

// panelData is what a panel's queries returned.
type panelData struct {
	Series []series
	Err    error
}

// page is everything the HTML page shows.
type page struct {
	Dashboard  *dashboard
	Data       map[int]panelData // by panel id
	Start, End time.Time
	Variables  string // what the variable bar shows, e.g. "Tenant: All"
	Width      float64
}

// renderPage writes the dashboard as one self-contained HTML page with inline SVG.
func renderPage(p page) string {
	h := pageHeight(p.Dashboard.Panels, p.Width)
	var b strings.Builder
	fmt.Fprintf(&b, `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>%s</title>
<style>
html,body{margin:0;background:%s;color:%s;font-family:Inter,"Helvetica Neue",Arial,sans-serif;}
svg text{font-family:Inter,"Helvetica Neue",Arial,sans-serif;}
</style></head><body>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">
`, html.EscapeString(p.Dashboard.Title), colorPage, colorText, int(p.Width), h, int(p.Width), h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="%s"/>`+"\n", colorPage)
	fmt.Fprintf(&b, `<text x="%d" y="30" font-size="18" fill="%s">%s</text>`+"\n", pagePad, colorText, html.EscapeString(p.Dashboard.Title))
	fmt.Fprintf(&b, `<text x="%d" y="30" font-size="13" fill="%s" style="white-space:pre">%s</text>`+"\n", pagePad+140, colorMuted, html.EscapeString(p.Variables))
	rangeText := fmt.Sprintf("%s to %s (%s)", p.Start.Format("2006-01-02 15:04:05"), p.End.Format("15:04:05 MST"), p.End.Sub(p.Start).Round(time.Second))
	fmt.Fprintf(&b, `<text x="%d" y="30" font-size="13" fill="%s" text-anchor="end">%s</text>`+"\n", int(p.Width)-pagePad, colorMuted, html.EscapeString(rangeText))
	for _, pn := range p.Dashboard.Panels {
		r := panelRect(pn.GridPos, p.Width)
		switch pn.Type {
		case "row":
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="15" font-weight="600" fill="%s">%s</text>`+"\n", r.X, r.Y+r.H/2+5, colorText, html.EscapeString(pn.Title))
			continue
		}
		b.WriteString(renderPanel(pn, p.Data[pn.ID], r, p.Start, p.End))
	}
	b.WriteString("</svg>\n</body></html>\n")
	return b.String()
}

// renderPanel draws one panel's frame, title and content.
func renderPanel(pn panel, d panelData, r rect, start, end time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<g transform="translate(%.1f,%.1f)">`+"\n", r.X, r.Y)
	fmt.Fprintf(&b, `<rect x="0.5" y="0.5" width="%.1f" height="%.1f" rx="2" fill="%s" stroke="%s"/>`+"\n", r.W-1, r.H-1, colorPanel, colorBorder)
	fmt.Fprintf(&b, `<text x="8" y="21" font-size="14" font-weight="500" fill="%s">%s</text>`+"\n", colorText, html.EscapeString(pn.Title))
	body := rect{X: 8, Y: titleH, W: r.W - 16, H: r.H - titleH - 8}
	switch {
	case d.Err != nil:
		b.WriteString(centred(body, "Query error", colorNamed("red")))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="%s" text-anchor="middle">%s</text>`+"\n", body.X+body.W/2, body.Y+body.H/2+18, colorMuted, html.EscapeString(truncate(d.Err.Error(), int(body.W/6))))
	case !hasPoints(d.Series):
		b.WriteString(centred(body, "No data", colorMuted))
	case pn.Type == "bargauge":
		b.WriteString(barGauge(pn, d.Series, body))
	case pn.Type == "state-timeline":
		b.WriteString(stateTimeline(pn, d.Series, body, start, end))
	default:
		b.WriteString(timeSeries(pn, d.Series, body, start, end))
	}
	b.WriteString("</g>\n")
	return b.String()
}

func colorNamed(c string) string { return themeColor(c) }

func hasPoints(ss []series) bool {
	for _, s := range ss {
		if len(s.Points) > 0 {
			return true
		}
	}
	return false
}

func centred(r rect, text, color string) string {
	return fmt.Sprintf(`<text x="%.1f" y="%.1f" font-size="16" fill="%s" text-anchor="middle">%s</text>`+"\n",
		r.X+r.W/2, r.Y+r.H/2+5, color, html.EscapeString(text))
}

func truncate(s string, n int) string {
	if n < 4 || len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// textWidth estimates the width of s at font size px (an average glyph is about 0.55 em).
func textWidth(s string, px float64) float64 { return float64(len([]rune(s))) * px * 0.55 }

// legendLayout flows legend entries left to right into lines of width w, as Grafana's list
// legend does, and returns each entry's position and the lines used; entries past maxLines
// are dropped and counted in hidden.
type legendItem struct {
	X, Line float64
	Name    string
	Color   string
}

func legendLayout(names, colors []string, w float64, maxLines int) (items []legendItem, lines, hidden int) {
	x, line := 0.0, 0
	for i, n := range names {
		iw := 18 + textWidth(n, 12) + 14
		if x > 0 && x+iw > w {
			x, line = 0, line+1
		}
		if line >= maxLines {
			return items, maxLines, len(names) - i
		}
		items = append(items, legendItem{X: x, Line: float64(line), Name: n, Color: colors[i]})
		x += iw
	}
	return items, line + 1, 0
}

const legendLineH = 18

func drawLegend(b *strings.Builder, items []legendItem, hidden int, x, y, w float64) {
	for _, it := range items {
		ly := y + it.Line*legendLineH
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="14" height="4" rx="1" fill="%s"/>`, x+it.X, ly+6, it.Color)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="12" fill="%s">%s</text>`+"\n", x+it.X+18, ly+12, colorText, html.EscapeString(it.Name))
	}
	if hidden > 0 {
		last := 0.0
		if len(items) > 0 {
			last = items[len(items)-1].Line
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="12" fill="%s" text-anchor="end">+%d more</text>`+"\n", x+w, y+last*legendLineH+12, colorMuted, hidden)
	}
}

// timeSeries draws a line chart with a value axis in the panel's unit, a time axis and a
// legend below, with each series broken where samples are missing.
func timeSeries(pn panel, ss []series, r rect, start, end time.Time) string {
	var b strings.Builder
	var names, colors []string
	for i, s := range ss {
		names = append(names, s.Name)
		colors = append(colors, palette[i%len(palette)])
	}
	maxLines := max(1, int((r.H-90)/legendLineH))
	items, lines, hidden := legendLayout(names, colors, r.W, min(maxLines, 4))
	plotH := r.H - float64(lines)*legendLineH - 22
	unit := pn.FieldConfig.Defaults.Unit

	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, p := range s.Points {
			if !math.IsNaN(p.V) && !math.IsInf(p.V, 0) {
				lo, hi = math.Min(lo, p.V), math.Max(hi, p.V)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
	}
	if pn.FieldConfig.Defaults.Min != nil {
		lo = *pn.FieldConfig.Defaults.Min
	} else if lo > 0 {
		lo = 0
	}
	if pn.FieldConfig.Defaults.Max != nil {
		hi = *pn.FieldConfig.Defaults.Max
	}
	ticks := niceTicks(lo, hi, max(2, int(plotH/40)))
	lo, hi = ticks[0], ticks[len(ticks)-1]

	axisW := 0.0
	for _, t := range ticks {
		axisW = math.Max(axisW, textWidth(formatValue(t, unit), 11))
	}
	plot := rect{X: r.X + axisW + 8, Y: r.Y + 4, W: r.W - axisW - 12, H: plotH - 4}
	sx := func(t time.Time) float64 {
		return plot.X + plot.W*float64(t.Sub(start))/float64(end.Sub(start))
	}
	sy := func(v float64) float64 { return plot.Y + plot.H - plot.H*(v-lo)/(hi-lo) }

	for _, t := range ticks {
		y := sy(t)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s"/>`, plot.X, plot.X+plot.W, y, y, colorGrid)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="%s" text-anchor="end">%s</text>`+"\n", plot.X-6, y+4, colorMuted, html.EscapeString(formatValue(t, unit)))
	}
	for _, t := range timeTicks(start, end, max(2, int(plot.W/90))) {
		x := sx(t)
		label := tickLabel(t, start, end, max(2, int(plot.W/90)))
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s"/>`, x, x, plot.Y, plot.Y+plot.H, colorGrid)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="%s" text-anchor="middle">%s</text>`+"\n", x, plot.Y+plot.H+15, colorMuted, label)
	}
	gap := 3 * stepOf(ss)
	for i, s := range ss {
		d := linePath(s.Points, sx, sy, gap)
		if d == "" {
			continue
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-linejoin="round"/>`+"\n", d, colors[i])
		if len(s.Points) == 1 || isolated(s.Points, gap) {
			for _, p := range s.Points {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2" fill="%s"/>`, sx(p.T), sy(p.V), colors[i])
			}
		}
	}
	drawLegend(&b, items, hidden, r.X, plot.Y+plot.H+24, r.W)
	return b.String()
}

// stepOf is the smallest spacing of samples in ss: the query's step.
func stepOf(ss []series) time.Duration {
	step := time.Duration(0)
	for _, s := range ss {
		for i := 1; i < len(s.Points); i++ {
			if d := s.Points[i].T.Sub(s.Points[i-1].T); d > 0 && (step == 0 || d < step) {
				step = d
			}
		}
	}
	if step == 0 {
		step = time.Minute
	}
	return step
}

// isolated reports whether some sample has no neighbour within gap, so a line cannot show it.
func isolated(ps []point, gap time.Duration) bool {
	for i := range ps {
		prev := i > 0 && ps[i].T.Sub(ps[i-1].T) <= gap
		next := i+1 < len(ps) && ps[i+1].T.Sub(ps[i].T) <= gap
		if !prev && !next {
			return true
		}
	}
	return false
}

// linePath is an SVG path through ps, scaled by sx and sy, that lifts the pen where two
// samples are more than gap apart (Prometheus returns no sample where a series is absent)
// and skips values that are not numbers.
func linePath(ps []point, sx func(time.Time) float64, sy func(float64) float64, gap time.Duration) string {
	var b strings.Builder
	var prev *point
	for i := range ps {
		p := ps[i]
		if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
			prev = nil
			continue
		}
		cmd := "L"
		if prev == nil || p.T.Sub(prev.T) > gap {
			cmd = "M"
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s%s,%s", cmd, num(sx(p.T)), num(sy(p.V)))
		prev = &ps[i]
	}
	return b.String()
}

// num prints a coordinate with at most one decimal.
func num(f float64) string { return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) }

// barGauge draws one horizontal bar per series with its last value, coloured by the
// thresholds when the panel has them (Grafana's "basic" display mode).
func barGauge(pn panel, ss []series, r rect) string {
	var b strings.Builder
	unit := pn.FieldConfig.Defaults.Unit
	type bar struct {
		name string
		v    float64
	}
	var bars []bar
	hi := 0.0
	for _, s := range ss {
		if v, ok := s.last(); ok {
			bars = append(bars, bar{s.Name, v})
			hi = math.Max(hi, v)
		}
	}
	if len(bars) == 0 {
		return centred(r, "No data", colorMuted)
	}
	if pn.FieldConfig.Defaults.Max != nil {
		hi = *pn.FieldConfig.Defaults.Max
	}
	if hi <= 0 {
		hi = 1
	}
	rowH := math.Min(40, r.H/float64(len(bars)))
	labelW := 0.0
	for _, br := range bars {
		labelW = math.Max(labelW, textWidth(br.name, 12))
	}
	labelW = math.Min(labelW+12, r.W*0.45)
	valueW := 80.0
	for i, br := range bars {
		y := r.Y + float64(i)*rowH
		color := palette[i%len(palette)]
		if len(pn.FieldConfig.Defaults.Thresholds.Steps) > 0 {
			color = thresholdColor(pn.FieldConfig.Defaults.Thresholds, br.v)
		}
		barH := math.Max(4, rowH-12)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="12" fill="%s">%s</text>`, r.X, y+rowH/2+4, colorText, html.EscapeString(truncate(br.name, int(labelW/6.6))))
		track := r.W - labelW - valueW
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, r.X+labelW, y+(rowH-barH)/2, track, barH, colorGrid)
		w := math.Max(1, track*math.Max(0, br.v)/hi)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.85"/>`, r.X+labelW, y+(rowH-barH)/2, w, barH, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="14" font-weight="500" fill="%s" text-anchor="end">%s</text>`+"\n", r.X+r.W, y+rowH/2+5, color, html.EscapeString(formatValue(br.v, unit)))
	}
	return b.String()
}

// thresholdColor is the colour of the highest step at or below v.
func thresholdColor(t thresholds, v float64) string {
	color := colorText
	for _, s := range t.Steps {
		if s.Value == nil || v >= *s.Value {
			color = themeColor(s.Color)
		}
	}
	return color
}

// stateTimeline draws a band per series whose segments show the mapped state (value
// mappings, else thresholds) over time, merging equal neighbours as mergeValues does.
func stateTimeline(pn panel, ss []series, r rect, start, end time.Time) string {
	var b strings.Builder
	legendH := 24.0
	labelW := 0.0
	for _, s := range ss {
		labelW = math.Max(labelW, textWidth(s.Name, 12))
	}
	labelW += 12
	axisH := 18.0
	rowH := math.Min(48, (r.H-legendH-axisH)/float64(len(ss)))
	plot := rect{X: r.X + labelW, Y: r.Y, W: r.W - labelW, H: rowH * float64(len(ss))}
	sx := func(t time.Time) float64 {
		return plot.X + plot.W*float64(t.Sub(start))/float64(end.Sub(start))
	}
	step := stepOf(ss)
	type state struct{ text, color string }
	stateOf := func(v float64) state {
		key := strconv.FormatFloat(v, 'f', -1, 64)
		for _, m := range pn.FieldConfig.Defaults.Mappings {
			if o, ok := m.Options[key]; ok && m.Type == "value" {
				return state{o.Text, themeColor(o.Color)}
			}
		}
		return state{formatValue(v, pn.FieldConfig.Defaults.Unit), thresholdColor(pn.FieldConfig.Defaults.Thresholds, v)}
	}
	seen := map[string]string{}
	var order []string
	for i, s := range ss {
		y := plot.Y + float64(i)*rowH
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="12" fill="%s">%s</text>`+"\n", r.X, y+rowH/2+4, colorText, html.EscapeString(s.Name))
		for j := 0; j < len(s.Points); {
			st := stateOf(s.Points[j].V)
			k := j + 1
			for k < len(s.Points) && s.Points[k].V == s.Points[j].V && s.Points[k].T.Sub(s.Points[k-1].T) <= 3*step {
				k++
			}
			x0 := sx(s.Points[j].T)
			x1 := sx(s.Points[k-1].T.Add(step))
			if k < len(s.Points) && s.Points[k].T.Sub(s.Points[k-1].T) <= 3*step {
				x1 = sx(s.Points[k].T)
			}
			x1 = math.Min(x1, plot.X+plot.W)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.75" stroke="%s" stroke-opacity="0.9"/>`+"\n",
				x0, y+rowH*0.1, math.Max(1, x1-x0), rowH*0.8, st.color, st.color)
			if _, ok := seen[st.text]; !ok {
				seen[st.text] = st.color
				order = append(order, st.text)
			}
			j = k
		}
	}
	for _, t := range timeTicks(start, end, max(2, int(plot.W/90))) {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="%s" text-anchor="middle">%s</text>`+"\n", sx(t), plot.Y+plot.H+14, colorMuted, tickLabel(t, start, end, max(2, int(plot.W/90))))
	}
	sort.Strings(order)
	var colors []string
	for _, o := range order {
		colors = append(colors, seen[o])
	}
	items, _, hidden := legendLayout(order, colors, r.W, 1)
	drawLegend(&b, items, hidden, r.X, plot.Y+plot.H+axisH+2, r.W)
	return b.String()
}

// niceTicks returns about n evenly spaced round values that cover [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		if hi == 0 {
			hi = lo + 1
		} else {
			hi = lo + math.Abs(lo)*0.1
		}
	}
	raw := (hi - lo) / float64(max(1, n))
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	first := math.Floor(lo/step) * step
	var ticks []float64
	for v := first; v < hi+step*0.999; v += step {
		ticks = append(ticks, math.Round(v/step)*step)
	}
	if len(ticks) < 2 {
		ticks = append(ticks, first+step)
	}
	return ticks
}

// timeTicks are about n round times between start and end.
func timeTicks(start, end time.Time, n int) []time.Time {
	step := tickStep(start, end, n)
	var out []time.Time
	for t := start.Truncate(step).Add(step); t.Before(end); t = t.Add(step) {
		out = append(out, t)
	}
	return out
}

// tickLabel prints a tick with seconds when ticks are less than a minute apart.
func tickLabel(t, start, end time.Time, n int) string {
	if tickStep(start, end, n) < time.Minute {
		return t.Format("15:04:05")
	}
	return t.Format("15:04")
}

// tickStep is the round spacing that puts at most n ticks between start and end.
func tickStep(start, end time.Time, n int) time.Duration {
	span := end.Sub(start)
	step := time.Minute
	for _, s := range []time.Duration{10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour} {
		step = s
		if span/s <= time.Duration(n) {
			break
		}
	}
	return step
}

// formatValue prints v in a Grafana unit: short, s, ops, percentunit (others as short).
func formatValue(v float64, unit string) string {
	switch unit {
	case "s":
		return formatSeconds(v)
	case "ops":
		return short(v) + " ops/s"
	case "percentunit":
		return trimFloat(v*100, 3) + "%"
	}
	return short(v)
}

func formatSeconds(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0 s"
	case a < 1e-3:
		return trimFloat(v*1e6, 3) + " µs"
	case a < 1:
		return trimFloat(v*1e3, 3) + " ms"
	case a < 60:
		return trimFloat(v, 3) + " s"
	case a < 3600:
		return trimFloat(v/60, 3) + " min"
	case a < 86400:
		return trimFloat(v/3600, 3) + " hour"
	case a < 7*86400:
		return trimFloat(v/86400, 3) + " day"
	case a < 365*86400:
		return trimFloat(v/(7*86400), 3) + " week"
	}
	return trimFloat(v/(365*86400), 3) + " year"
}

func short(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return trimFloat(v/1e9, 3) + " Bil"
	case a >= 1e6:
		return trimFloat(v/1e6, 3) + " Mil"
	case a >= 1e3:
		return trimFloat(v/1e3, 3) + " K"
	}
	return trimFloat(v, 3)
}

// trimFloat prints v with sig significant digits and no trailing zeros.
func trimFloat(v float64, sig int) string {
	if v == 0 {
		return "0"
	}
	digits := max(0, sig-1-int(math.Floor(math.Log10(math.Abs(v)))))
	s := strconv.FormatFloat(v, 'f', digits, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// sortedKeys are m's keys in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
