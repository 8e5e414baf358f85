package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/keystore"
	"github.com/securetext/securetext/workloads/store"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// auditExportPage is how many events are read per query.
const auditExportPage = 10_000

// auditExport runs "securetext audit export".
func auditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dsn        = fs.String("dsn", "", "tenant database: postgres://… or sqlite:PATH")
		tenant     = fs.String("tenant", "", "tenant name")
		keyFlags   = registerAuditKeyFlags(fs)
		out        = fs.String("o", "", "write the export to FILE instead of stdout")
		checkpoint = fs.Bool("checkpoint", true, "sign a checkpoint of the current head first, so the export covers every event")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dsn == "" || *tenant == "" {
		return errors.New("audit export: -dsn and -tenant are required")
	}
	keys, closeKeys, err := keyFlags.open("audit export", *tenant)
	if err != nil {
		return err
	}
	defer closeKeys()

	st, err := store.Open(ctx, *dsn, *tenant)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	defer st.Close()
	if *checkpoint {
		// Chain what is pending first, so that the export covers the events of moments ago,
		// among them the record of a pruning that an export starting at its anchor needs.
		for {
			n, err := st.SequenceAudit(ctx, auditExportPage)
			if err != nil {
				return fmt.Errorf("audit export: %w", err)
			}
			if n == 0 {
				break
			}
		}
		if _, _, err := st.CheckpointAudit(ctx, keys); err != nil {
			return fmt.Errorf("audit export: sign a checkpoint of the current head: %w", err)
		}
	}
	pub, err := keys.PublicKey(ctx)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	// The events up to the newest checkpoint (later ones would be unprotected, and verify
	// refuses an export whose tail no checkpoint covers), from the start of the trail: event 1,
	// or the anchor of a pruned trail.
	events, checkpoints, err := st.AuditTrail(ctx)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}

	w := stdout
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
		defer f.Close()
		w = f
	}
	if err := audit.Export(w, pub, events, checkpoints); err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if f, ok := w.(*os.File); ok && f != os.Stdout {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("audit export: %w", err)
		}
	}
	return nil
}

// auditKeys is the tenant's audit signing key, as the audit commands use it.
type auditKeys interface {
	audit.CheckpointSigner
	PublicKey(context.Context) (ed25519.PublicKey, error)
}

// auditKeyFlags name the tenant's audit signing key: the local key file of development mode,
// or the keystore and the client certificate to reach it with.
type auditKeyFlags struct {
	localKey, url, certFile, keyFile, caFile *string
}

func registerAuditKeyFlags(fs *flag.FlagSet) auditKeyFlags {
	return auditKeyFlags{
		localKey: fs.String("local-key-file", "", "local keystore key file (development mode)"),
		url:      fs.String("keystore-url", "", "keystore URL, e.g. https://keystore:8443"),
		certFile: fs.String("cert", "", "client certificate PEM for the keystore"),
		keyFile:  fs.String("key", "", "client key PEM for the keystore"),
		caFile:   fs.String("ca", "", "tenant CA PEM that signed the keystore's certificate"),
	}
}

// open returns the key the flags name, and what closes it; cmd prefixes the errors.
func (f auditKeyFlags) open(cmd, tenant string) (auditKeys, func(), error) {
	switch {
	case *f.localKey != "" && *f.url != "":
		return nil, nil, fmt.Errorf("%s: give -local-key-file or -keystore-url, not both", cmd)
	case *f.localKey != "":
		l, err := keystore.NewLocalInProcess(*f.localKey, tenant, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", cmd, err)
		}
		return l, func() {}, nil
	case *f.url != "":
		cert, err := tls.LoadX509KeyPair(*f.certFile, *f.keyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: load -cert and -key: %w", cmd, err)
		}
		caPEM, err := os.ReadFile(*f.caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: read -ca: %w", cmd, err)
		}
		roots, err := tenantpki.CertPoolFromPEM(caPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: -ca: %w", cmd, err)
		}
		c, err := keystore.NewClient(keystore.ClientConfig{URL: *f.url, Certificate: cert, RootCAs: roots, Timeout: 10 * time.Second})
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", cmd, err)
		}
		return c, func() { c.Close() }, nil
	}
	return nil, nil, fmt.Errorf("%s: the signing key's public half comes from the keystore: give -keystore-url (with -cert, -key, -ca) or -local-key-file", cmd)
}
