# Two images from one Dockerfile, both FROM scratch, so that building them pulls nothing:
#
#   --target operator    /securetext-operator (the default target)
#   --target workloads   /usr/local/bin/securetext: gateway | viewer | keystore | audit | sender | dev
#
# Each holds a static Go binary, a CA bundle (/etc/ssl/certs/ca-certificates.crt), an
# /etc/passwd and /etc/group naming the non-root user securetext (uid and gid 65532) it runs
# as, and an empty /tmp.
#
# This file compiles nothing. `make images` (or hack/images.sh build, without make) builds the
# binaries with the host's Go toolchain, stages them and those files in bin/image-context/, and
# runs `docker build` with the repository root as the context; .dockerignore sends only
# bin/image-context/. To do it by hand, from the repository root:
#
#   CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$V" -o bin/image-context/securetext-operator .
#   CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$V" -o bin/image-context/securetext ./workloads/cmd/securetext
#   # bin/image-context/rootfs/: etc/passwd, etc/group, etc/ssl/certs/ca-certificates.crt and
#   # tmp/ (mode 1777), as hack/images.sh writes them
#   docker build --target operator --build-arg VERSION=$V -t securetext/operator:$V .
#   docker build --target workloads --build-arg VERSION=$V -t securetext/workloads:$V .
#
# No `# syntax=` line: it would make BuildKit pull a frontend image. The legacy builder
# (DOCKER_BUILDKIT=0) and BuildKit both build this file offline.

FROM scratch AS base
ARG VERSION=dev
LABEL org.opencontainers.image.title="SecureText" org.opencontainers.image.version="$VERSION"
COPY bin/image-context/rootfs/ /
USER 65532:65532

# The operator's tenant Deployments run /usr/local/bin/securetext with the component's
# subcommand (controllers/render_workloads.go).
FROM base AS workloads
COPY bin/image-context/securetext /usr/local/bin/securetext
ENTRYPOINT ["/usr/local/bin/securetext"]

FROM base AS operator
COPY bin/image-context/securetext-operator /securetext-operator
ENTRYPOINT ["/securetext-operator"]
