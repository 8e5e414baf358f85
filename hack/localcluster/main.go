// Command localcluster runs a local Kubernetes control plane (kube-apiserver + etcd from bin/,
// the SecureText CRDs installed) for `make run`, writes a cluster-admin kubeconfig, and keeps
// running until interrupted. It has no nodes: pods never start, but every object, schema and
// CEL rule is handled by the real API server.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/securetext/securetext/hack/testenv"
)

func main() {
	kubeconfig := flag.String("write-kubeconfig", "bin/local/kubeconfig", "where to write the cluster-admin kubeconfig")
	flag.Parse()

	kube, err := testenv.StartKube()
	if err != nil {
		slog.Error("start control plane", "err", err)
		os.Exit(1)
	}
	if err := kube.WriteKubeconfig(*kubeconfig); err != nil {
		slog.Error("write kubeconfig", "err", err)
		_ = kube.Stop() // os.Exit skips defers: stop etcd and kube-apiserver explicitly
		os.Exit(1)
	}
	defer kube.Stop()
	fmt.Printf("control plane ready: API server %s, kubeconfig %s\n", kube.Config.Host, *kubeconfig)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	fmt.Println("stopping control plane")
}
