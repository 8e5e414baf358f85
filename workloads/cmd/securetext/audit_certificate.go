package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/store"
)

// auditCertificate runs "securetext audit certificate": the certificate of destruction of a
// purged message, which `securetext audit verify -key …` checks offline.
func auditCertificate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit certificate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dsn      = fs.String("dsn", "", "tenant database: postgres://… or sqlite:PATH")
		tenant   = fs.String("tenant", "", "tenant name")
		message  = fs.String("message", "", "id of the purged message")
		keyFlags = registerAuditKeyFlags(fs)
		out      = fs.String("o", "", "write the certificate to FILE instead of stdout")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dsn == "" || *tenant == "" || *message == "" {
		return errors.New("audit certificate: -dsn, -tenant and -message are required")
	}
	keys, closeKeys, err := keyFlags.open("audit certificate", *tenant)
	if err != nil {
		return err
	}
	defer closeKeys()
	st, err := store.Open(ctx, *dsn, *tenant)
	if err != nil {
		return fmt.Errorf("audit certificate: %w", err)
	}
	defer st.Close()

	// Chain what is pending, so that a purge of moments ago has its place in the chain.
	for {
		n, err := st.SequenceAudit(ctx, auditExportPage)
		if err != nil {
			return fmt.Errorf("audit certificate: %w", err)
		}
		if n == 0 {
			break
		}
	}
	events, err := st.MessageEvents(ctx, *message)
	if err != nil {
		return fmt.Errorf("audit certificate: %w", err)
	}
	var purged *audit.Event
	for i := range events {
		if events[i].Kind == audit.KindPurged && events[i].Seq > 0 {
			purged = &events[i]
		}
	}
	if purged == nil {
		return fmt.Errorf("audit certificate: message %s has no purge in the audit trail: it is not purged (or the id is wrong)", *message)
	}

	// The smallest checkpoint that covers the purge keeps the certificate short; sign one if
	// none does yet.
	cp, err := coveringCheckpoint(ctx, st, purged.Seq)
	if err != nil {
		return err
	}
	if cp == nil {
		if _, _, err := st.CheckpointAudit(ctx, keys); err != nil {
			return fmt.Errorf("audit certificate: sign a checkpoint of the current head: %w", err)
		}
		if cp, err = coveringCheckpoint(ctx, st, purged.Seq); err != nil {
			return err
		}
		if cp == nil {
			return fmt.Errorf("audit certificate: no checkpoint covers event %d after signing one", purged.Seq)
		}
	}
	segment, err := st.AuditEvents(ctx, purged.Seq-1, int(cp.Size-purged.Seq+1))
	if err != nil {
		return fmt.Errorf("audit certificate: %w", err)
	}
	pub, err := keys.PublicKey(ctx)
	if err != nil {
		return fmt.Errorf("audit certificate: %w", err)
	}

	w := stdout
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("audit certificate: %w", err)
		}
		defer f.Close()
		w = f
	}
	if err := audit.WriteCertificate(w, pub, segment, *cp); err != nil {
		return fmt.Errorf("audit certificate: %w", err)
	}
	if f, ok := w.(*os.File); ok && f != os.Stdout {
		return f.Sync()
	}
	return nil
}

// coveringCheckpoint returns the smallest stored checkpoint at or after event seq, or nil.
func coveringCheckpoint(ctx context.Context, st *store.Store, seq uint64) (*audit.Checkpoint, error) {
	cps, err := st.Checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit certificate: %w", err)
	}
	var best *audit.Checkpoint
	for i := range cps {
		if cps[i].Size >= seq && (best == nil || cps[i].Size < best.Size) {
			best = &cps[i]
		}
	}
	return best, nil
}
