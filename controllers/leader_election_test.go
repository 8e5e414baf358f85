package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// leaderElectionID is main.go's: the Lease the shipped operator's replicas compete for.
const leaderElectionID = "securetext-operator.securetext.io"

// TestLeaderElectionAsChartServiceAccount runs leader election as the shipped operator does
// (main.go: --leader-elect, the Lease in the release namespace, released on a clean stop), as
// the chart's ServiceAccount: the chart's leader-election Role must let it take the Lease,
// report that as an Event, and hand the Lease back. The suite's own operator runs without
// leader election, so this is the test that exercises that Role.
func TestLeaderElectionAsChartServiceAccount(t *testing.T) {
	ctx := context.Background()
	mgr, err := ctrl.NewManager(operatorConfig(), ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		LeaderElection:                true,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionNamespace:       operatorNamespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	defer func() { _ = stop() }()

	select {
	case <-mgr.Elected():
	case err := <-done:
		stopped = true
		t.Fatalf("the manager stopped before it was elected: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not elected after 30s: is the chart's leader-election Role enough? (see the forbidden: lines)")
	}
	var lease coordinationv1.Lease
	key := client.ObjectKey{Namespace: operatorNamespace, Name: leaderElectionID}
	if err := k8s.Get(ctx, key, &lease); err != nil {
		t.Fatal(err)
	}
	holder := ptr.Deref(lease.Spec.HolderIdentity, "")
	if holder == "" {
		t.Fatalf("elected, but Lease %s has no holder", key)
	}
	eventually(t, "the leader-election Event", func() error {
		var events corev1.EventList
		if err := k8s.List(ctx, &events, client.InNamespace(operatorNamespace)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == "LeaderElection" && e.InvolvedObject.Kind == "Lease" && e.InvolvedObject.Name == leaderElectionID {
				return nil
			}
		}
		return fmt.Errorf("no LeaderElection Event for Lease %s among %d events", key, len(events.Items))
	})

	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("stop the manager: %v", err)
	}
	if err := k8s.Get(ctx, key, &lease); err != nil {
		t.Fatal(err)
	}
	if h := ptr.Deref(lease.Spec.HolderIdentity, ""); h != "" {
		t.Errorf("Lease %s still held by %s after a clean stop: the next replica would wait out the lease", key, h)
	}
}
