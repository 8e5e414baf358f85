package retention

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultWatchInterval is how often a Source looks at its file. The kubelet refreshes a
// ConfigMap volume about once a minute, so a change takes effect within a minute or two.
const DefaultWatchInterval = 10 * time.Second

// Source holds the settings of a mounted retention.json and re-reads the file when it
// changes. The kubelet updates a ConfigMap volume by swapping its ..data symlink, so the file
// is read whole through the symlink and compared by content: a swap is seen as one change,
// never half a file. A file that does not parse or validate is logged and ignored: the last
// good settings stay in force, so that a bad edit can neither stop the holds nor let a rule
// the API server would refuse dispose of anything.
type Source struct {
	path string
	log  *slog.Logger

	mu       sync.Mutex
	settings Settings
	good     []byte // the content that settings came from

	reloading sync.Mutex // one reload at a time
	refusal   string     // why the last reload was refused, "" if it was not; for Watch's logging
}

// LoadSource reads and validates the settings file at path (e.g.
// /etc/securetext/retention/retention.json). It fails if the file cannot be read or is
// invalid: a workload should not start without knowing its holds.
func LoadSource(path string, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read retention settings: %w", err)
	}
	set, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Source{path: path, log: log, settings: set, good: data}, nil
}

// Settings returns the last good settings. It is safe for concurrent use.
func (s *Source) Settings() Settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settings
}

// Reload reads the file again and takes its settings if its content changed and is valid. It
// reports whether the settings changed; an error says why the file was not taken.
func (s *Source) Reload() (bool, error) {
	changed, _, err := s.reload()
	return changed, err
}

// reload is Reload; news reports whether a refusal differs from the previous one, so that
// Watch logs each reason once.
func (s *Source) reload() (changed, news bool, err error) {
	s.reloading.Lock()
	defer s.reloading.Unlock()
	data, err := os.ReadFile(s.path)
	if err == nil && !bytes.Equal(data, s.current()) {
		var set Settings
		if set, err = Parse(data); err == nil {
			s.mu.Lock()
			s.settings, s.good = set, data
			s.mu.Unlock()
			changed = true
		} else {
			err = fmt.Errorf("%s: %w", s.path, err)
		}
	}
	if err != nil {
		news = err.Error() != s.refusal
		s.refusal = err.Error()
		return false, news, err
	}
	s.refusal = ""
	return changed, false, nil
}

func (s *Source) current() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.good
}

// Watch reloads the file every interval (DefaultWatchInterval if 0) until ctx ends. A change
// is logged with the policy and the hold names; a refused file once per content, with the
// reason (Parse's errors quote names, durations and times, never a phone number).
func (s *Source) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, news, err := s.reload()
		switch {
		case err != nil && news:
			s.log.Error("retention settings refused; keeping the last good settings", "path", s.path, "error", err)
		case changed:
			set := s.Settings()
			policy, names := "", make([]string, len(set.Holds))
			if set.Policy != nil {
				policy = set.Policy.Name
			}
			for i, h := range set.Holds {
				names[i] = h.Name
			}
			s.log.Info("retention settings changed", "policy", policy, "holds", names)
		}
	}
}
