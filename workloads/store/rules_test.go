package store

import (
	"encoding/binary"
	"errors"
	"regexp"
	"testing"
	"time"
)

func TestNextStatus(t *testing.T) {
	for _, tc := range []struct {
		from, to, want Status
		err            error
	}{
		{StatusAccepted, StatusNotified, StatusNotified, nil},
		{StatusNotified, StatusDelivered, StatusDelivered, nil},
		{StatusDelivered, StatusFailed, StatusFailed, nil},
		{StatusFailed, StatusDelivered, StatusDelivered, nil},
		{StatusOpened, StatusDelivered, StatusOpened, nil}, // late news
		{StatusRead, StatusOpened, StatusRead, nil},
		{StatusRead, StatusRevoked, StatusRevoked, nil},
		{StatusAccepted, StatusExpired, StatusExpired, nil},
		{StatusExpired, StatusRead, StatusExpired, ErrConflict},
		{StatusRevoked, StatusRevoked, StatusRevoked, ErrConflict},
		{StatusPurged, StatusExpired, StatusPurged, ErrConflict},
	} {
		got, err := nextStatus(tc.from, tc.to)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("nextStatus(%s, %s) = %s, %v; want %s, %v", tc.from, tc.to, got, err, tc.want, tc.err)
		}
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^[a-z2-7]{26}$`)
	seen := make(map[string]bool)
	for range 1000 {
		id := NewID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("NewID() = %q: not 26 lowercase base32 characters, or repeated", id)
		}
		seen[id] = true
	}

	// Ids sort in the order they were made, to the millisecond, and carry the time.
	before := time.Now()
	first := NewID()
	time.Sleep(2 * time.Millisecond)
	second := NewID()
	if first >= second {
		t.Errorf("NewID() made %q, then %q two milliseconds later: not in order", first, second)
	}
	b, err := idEncoding.DecodeString(first)
	if err != nil {
		t.Fatal(err)
	}
	made := time.UnixMilli(int64(binary.BigEndian.Uint64(b[:8]) >> 16))
	if made.Before(before.Truncate(time.Millisecond)) || made.After(time.Now()) {
		t.Errorf("id %q says it was made at %s, not between %s and now", first, made, before)
	}

	// The other 80 bits are random: ids made in the same millisecond differ there.
	tails := make(map[string]bool)
	for range 1000 {
		tails[NewID()[10:]] = true
	}
	if len(tails) != 1000 {
		t.Errorf("1000 ids have %d distinct random tails", len(tails))
	}
}

func TestTemporarySQLState(t *testing.T) {
	for code, want := range map[string]bool{
		"08006": true, "08001": true, "53300": true, "53100": true, "57P01": true, "57P02": true,
		"57P03": true, "57014": true, "40001": true, "40P01": true,
		"23505": false, "42P01": false, "28P01": false, "22P02": false, "57000": false,
	} {
		if got := temporarySQLState(code); got != want {
			t.Errorf("temporarySQLState(%s) = %v, want %v", code, got, want)
		}
	}
}

func TestFailedWrapsBoth(t *testing.T) {
	cause := &timeoutError{}
	err := failed("read message m1", cause)
	if !IsTemporary(err) || !errors.Is(err, ErrUnavailable) || !errors.As(err, new(*timeoutError)) {
		t.Errorf("failed(timeout) = %v: want ErrUnavailable and the cause", err)
	}
	if err := failed("read message m1", ErrNotFound); IsTemporary(err) || !errors.Is(err, ErrNotFound) {
		t.Errorf("failed(ErrNotFound) = %v: want not temporary", err)
	}
}

type timeoutError struct{}

func (*timeoutError) Error() string   { return "i/o timeout" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }

func TestStoredTimes(t *testing.T) {
	local := time.Date(2025, 3, 1, 7, 0, 0, 123456789, time.FixedZone("x", -5*3600))
	got := at(local)
	if got.Location() != time.UTC || got.Nanosecond() != 123456000 || !got.Equal(local.Truncate(time.Microsecond)) {
		t.Errorf("at(%v) = %v", local, got)
	}
}

// The sequencer waits its interval unless more than sequenceTarget events arrived since its
// last run; then it waits about as long as sequenceTarget take to arrive, no less than a
// quarter of the interval.
func TestSequencerWait(t *testing.T) {
	const interval = 100 * time.Millisecond
	for _, tc := range []struct {
		n     int
		since time.Duration
		want  time.Duration
	}{
		{0, interval, interval},                      // idle
		{sequenceTarget, interval, interval},         // 2,000 events/s
		{2 * sequenceTarget, interval, interval / 2}, // 4,000 events/s
		{3 * sequenceTarget, 120 * time.Millisecond, 40 * time.Millisecond},
		{100 * sequenceTarget, interval, interval / 4}, // a backlog
		{2 * sequenceTarget, 10 * interval, interval},  // a long run before this one
	} {
		if got := sequencerWait(interval, tc.n, tc.since); got != tc.want {
			t.Errorf("sequencerWait(%v, %d, %v) = %v, want %v", interval, tc.n, tc.since, got, tc.want)
		}
	}
}
