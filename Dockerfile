# The operator image: a static binary on distroless, running as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY main.go ./
COPY api/ api/
COPY controllers/ controllers/
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/securetext-operator .

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/securetext-operator /securetext-operator
USER 65532:65532
ENTRYPOINT ["/securetext-operator"]
