# SecureText — developer and CI entry points. `make help` lists them.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

BIN ?= $(CURDIR)/bin
export SECURETEXT_BIN := $(BIN)
# envtest finds kube-apiserver and etcd here; they are built from Go modules, never downloaded.
export KUBEBUILDER_ASSETS := $(BIN)

KUBE_VERSION      := v1.37.2
ETCD_VERSION      := v3.7.0
VAULT_VERSION     := v1.21.2
# controller-gen and the Helm CLI (for the kind suite) are tools of the project's go.mod: their
# versions are pinned there and they compile with the project's own dependencies, shared with
# make test's build.
CONTROLLER_GEN    := go tool controller-gen
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION)

# VERSION is stamped into the binaries (--version) and tags the images: git describe, or the
# chart's appVersion in a tree without git history.
VERSION ?= $(shell hack/images.sh version)
VERSION_LDFLAGS = -X main.version=$(VERSION)

# Go builds one way everywhere: static (CGO_ENABLED=0) and -trimpath, as the images ship them.
# The tests then exercise the code as it ships, and make test, make images, the tools under
# hack/tools and hack/kind/image.sh share one Go build cache: a package compiled for one is
# reused by the others (link flags such as -ldflags -X never enter a package's compilation).
export CGO_ENABLED := 0
export GOFLAGS := -trimpath $(filter-out -trimpath,$(GOFLAGS))

GO_TEST_FLAGS ?= -count=1
TOOLS_MODULES := hack/tools/kube hack/tools/vault

##@ General

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## Generate CRDs and RBAC into config/ and the chart's CRD templates and role.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./api/... paths=./controllers/... output:crd:artifacts:config=config/crd/bases
	hack/chart-crds.sh
	cp config/rbac/role.yaml charts/securetext-operator/files/manager-role.yaml
	cp config/rbac/vault-operator-policy.hcl charts/securetext-operator/files/vault-operator-policy.hcl

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet the project (the e2e suite's build tag too) and the tools modules.
	go vet ./...
	go vet -tags e2e ./hack/kind/e2e/
	@for m in $(TOOLS_MODULES); do (cd $$m && go vet ./...); done

.PHONY: lint
lint: ## Fail if gofmt, go mod tidy, generate or manifests would change the tree.
	@go mod tidy -diff || { echo "go.mod is not tidy: run go mod tidy"; exit 1; }
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run make fmt"; exit 1; }
	$(MAKE) generate manifests
	@test -z "$$(git status --porcelain -- api config charts)" || { git status --porcelain -- api config charts; echo "generated files are stale: run make generate manifests and commit"; exit 1; }

##@ Build

.PHONY: build
build: ## Build the operator into bin/securetext-operator and the workloads into bin/securetext.
	go build -ldflags "$(VERSION_LDFLAGS)" -o $(BIN)/securetext-operator .
	go build -ldflags "$(VERSION_LDFLAGS)" -o $(BIN)/securetext ./workloads/cmd/securetext

.PHONY: images
images: ## Build the operator and workloads images offline (FROM scratch) with the local Docker engine.
	@hack/docker.sh ensure
	@VERSION="$(VERSION)" hack/images.sh build

##@ Test

.PHONY: kube-binaries
kube-binaries: ## Build (once, then cached) kube-apiserver, etcd and kubectl into bin/.
	@hack/build-tool.sh etcd hack/tools/kube ./etcd $(ETCD_VERSION)
	@hack/build-tool.sh kube-apiserver hack/tools/kube ./kube-apiserver $(KUBE_VERSION) "$(KUBE_LDFLAGS)"
	@hack/build-tool.sh kubectl hack/tools/kube ./kubectl $(KUBE_VERSION) "$(KUBE_LDFLAGS)"

.PHONY: vault-binary
vault-binary: ## Build (once, then cached) the Vault dev server into bin/.
	@hack/build-tool.sh vault-dev hack/tools/vault ./vault-dev $(VAULT_VERSION)

.PHONY: test-binaries
test-binaries: kube-binaries vault-binary ## kube-binaries, plus the Vault dev server and the Prometheus Operator's CRDs; install PostgreSQL, Chromium and axe-core if missing.
	@hack/postgres.sh ensure
	@hack/browser.sh ensure
	@hack/monitoring-crds.sh

.PHONY: test
test: test-binaries ## Run every test against the real API server, Vault and PostgreSQL.
	go test $(GO_TEST_FLAGS) ./...

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 8s); a failing input lands in its package's testdata/fuzz.
	hack/fuzz.sh

##@ Run

.PHONY: demo
demo: ## The product on loopback with embedded defaults: gateway, local keystore, SQLite, console SMS (data in securetext-dev-data/).
	go build -o $(BIN)/securetext ./workloads/cmd/securetext
	$(BIN)/securetext dev $(DEMO_FLAGS)

.PHONY: run
run: build kube-binaries vault-binary ## Local control plane from bin/, CRDs and samples installed, operator running against it.
	hack/run.sh

DASHBOARD_DURATION ?= 4m
.PHONY: dashboard-demo
dashboard-demo: build kube-binaries vault-binary ## Draw docs/dashboard.png: the Grafana dashboard filled by a real run on loopback (Prometheus, operator, workloads, load for DASHBOARD_DURATION; about 5-6 min in all).
	@hack/browser.sh ensure
	@command -v prometheus >/dev/null || { . hack/lib.sh && apt_install prometheus; }
	go run ./hack/dashboard-demo -duration $(DASHBOARD_DURATION) -out docs/dashboard.png

##@ kind

# A kind cluster built offline (hack/kind/), into the engine's images and the machine's kind cache
# (~/.cache/securetext/kind), shared by every clone on the machine. On 2 CPUs, once make test has
# compiled Kubernetes (the Go build is the same): kind-image about 7 minutes (kube-router 4,
# crictl and the Kubernetes link 1 each, CoreDNS under 1; two debootstraps alongside),
# kind-e2e-images about 6 more (Traefik nearly all of it; a PostgreSQL debootstrap alongside); a
# second run finds every step stamped and takes a second. kind-smoke takes about 2 minutes and deletes what it made.
.PHONY: kind-image
kind-image: ## Build (once, then cached) the kind node image for Kubernetes v1.37.2 and the kube-router image, offline.
	@hack/kind/image.sh build

.PHONY: kind-e2e-images
kind-e2e-images: ## Build (once, then cached) the end-to-end images (Vault dev, PostgreSQL 15, Traefik, probe) and the Helm CLI, offline.
	@hack/kind/image.sh e2e

# test-e2e: SecureText on a real kind cluster (hack/kind/e2e). On top of kind-image,
# kind-e2e-images and images (each cached), with everything built: about 7 minutes on 2 CPUs
# (cluster up with the images loaded 2.3, Vault, Traefik and the chart 0.5, two tenants Ready
# 1.8, the tests 2.3).
.PHONY: test-e2e
test-e2e: kind-image kind-e2e-images images ## Run the end-to-end suite on a 3-node kind cluster (E2E_KEEP=1 keeps the cluster).
	@hack/browser.sh ensure
	@bash -c '. hack/lib.sh && { command -v swaks >/dev/null && perl -MNet::SSLeay -e1 2>/dev/null || apt_install swaks libnet-ssleay-perl; }'
	go test -tags e2e $(GO_TEST_FLAGS) -timeout 45m ./hack/kind/e2e/

.PHONY: kind-smoke
kind-smoke: ## Create a 3-node kind cluster with kube-router, prove NetworkPolicy enforcement, delete it (E2E_KEEP=1 keeps it).
	@hack/kind/smoke.sh
