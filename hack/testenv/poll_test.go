package testenv

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	calls := 0
	err := Poll(context.Background(), time.Minute, time.Millisecond, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("Poll = %v after %d calls, want nil after 3", err, calls)
	}

	last := errors.New("still down")
	err = Poll(context.Background(), 20*time.Millisecond, time.Millisecond, func() error { return last })
	if !errors.Is(err, last) {
		t.Errorf("Poll after its timeout = %v, want the check's last error", err)
	}
}
