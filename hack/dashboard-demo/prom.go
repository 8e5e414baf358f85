package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// series is one line of a panel: its legend and its samples.
type series struct {
	Name   string
	Labels map[string]string
	Points []point
}

type point struct {
	T time.Time
	V float64
}

// last is the series' last sample that is a number (Grafana's lastNotNull).
func (s series) last() (float64, bool) {
	for i := len(s.Points) - 1; i >= 0; i-- {
		if v := s.Points[i].V; !math.IsNaN(v) && !math.IsInf(v, 0) {
			return v, true
		}
	}
	return 0, false
}

// promClient asks Prometheus's HTTP API (/api/v1/query_range) what a panel's targets return.
type promClient struct {
	base string
	http *http.Client
}

// queryRange runs expr over [start, end] at step and returns a series per result, named by
// legendFormat.
func (c promClient) queryRange(ctx context.Context, expr, legendFormat string, start, end time.Time, step time.Duration) ([]series, error) {
	q := url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/query_range?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %q: %d %s", expr, resp.StatusCode, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, r.Error)
	}
	var out []series
	for _, res := range r.Data.Result {
		s := series{Name: legend(legendFormat, res.Metric), Labels: res.Metric}
		for _, v := range res.Values {
			ts, _ := v[0].(float64)
			str, _ := v[1].(string)
			f, err := strconv.ParseFloat(str, 64)
			if err != nil {
				continue
			}
			sec, frac := math.Modf(ts)
			s.Points = append(s.Points, point{T: time.Unix(int64(sec), int64(frac*1e9)), V: f})
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b series) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

// ready waits until Prometheus answers /-/ready.
func (c promClient) ready(ctx context.Context) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/-/ready", nil)
		resp, err := c.http.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prometheus at %s is not ready: %w", c.base, context.Cause(ctx))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
