# Two images from one build: the operator (the default target) and the tenant workloads
# (docker build --target workloads): static binaries on distroless, running as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY main.go ./
COPY api/ api/
COPY controllers/ controllers/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/securetext-operator .

FROM build AS build-workloads
COPY workloads/ workloads/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/workloads/securetext ./workloads/cmd/securetext

# securetext gateway | viewer | keystore | audit export/verify | sender
FROM gcr.io/distroless/static:nonroot AS workloads
COPY --from=build-workloads /out/workloads/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/securetext"]

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/securetext-operator /securetext-operator
USER 65532:65532
ENTRYPOINT ["/securetext-operator"]
