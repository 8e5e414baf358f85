// securetext audit exports a tenant's audit trail and checks an export offline.
//
//	securetext audit export -dsn DSN -tenant NAME (-local-key-file FILE | -keystore-url URL -cert FILE -key FILE -ca FILE) [-o FILE]
//	securetext audit certificate -dsn DSN -tenant NAME -message ID (-local-key-file FILE | …) [-o FILE]
//	securetext audit verify [-key BASE64] [-trusted FILE] FILE
//
// certificate writes the certificate of destruction of a purged message: its purge event and
// the events after it up to a signed checkpoint (package audit, Certificate), which verify
// checks offline and prints what it certifies.
//
// export signs a checkpoint of the current chain head through the keystore (unless
// -checkpoint=false), then writes every event, every checkpoint and the signing public key
// as NDJSON. verify checks every event hash, the chain links, and every signed checkpoint,
// ending with one that covers the last event, and names the first bad sequence number.
//
// With -key, the export must be signed by that ed25519 public key (the tenant's published audit
// key). With -trusted, it must also extend a checkpoint kept from earlier (an earlier export, or
// its checkpoint lines): a trail rewritten or cut below that checkpoint is refused, even when
// every checkpoint the export carries is valid. Without it, the key in the export's own header is used and its id is printed, so it can
// be compared by hand: a forger can always sign with a key of their own.

package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/securetext/securetext/workloads/audit"
)

// runAudit runs "securetext audit export|certificate|verify".
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "export":
			return auditExport(ctx, args[1:], stdout, stderr)
		case "verify":
			return auditVerify(args[1:], stdout, stderr)
		case "certificate":
			return auditCertificate(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprint(stderr, auditUsage)
	return errors.New("audit: give export, certificate or verify")
}

const auditUsage = `usage:
  securetext audit export -dsn DSN -tenant NAME (-local-key-file FILE | -keystore-url URL -cert FILE -key FILE -ca FILE) [-o FILE] [-checkpoint=false]
  securetext audit certificate -dsn DSN -tenant NAME -message ID (-local-key-file FILE | -keystore-url URL -cert FILE -key FILE -ca FILE) [-o FILE]
  securetext audit verify [-key BASE64] [-trusted FILE] FILE
`

func auditVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "trusted ed25519 public key, standard base64")
	trusted := fs.String("trusted", "", "an earlier export (or its checkpoint lines) whose newest checkpoint this export must extend")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("audit verify: want one FILE\n%s", auditUsage)
	}
	return verifyExport(fs.Arg(0), *key, *trusted, stdout)
}

// verifyExport checks the export in path, against the base64 ed25519 key if one is given, and
// prints what it found.
func verifyExport(path, key, trustedPath string, stdout io.Writer) error {
	var pub ed25519.PublicKey
	if key != "" {
		b, err := base64.StdEncoding.DecodeString(key)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return fmt.Errorf("audit verify: -key must be a base64 ed25519 public key (32 bytes)")
		}
		pub = b
	}
	var trusted *audit.Checkpoint
	if trustedPath != "" {
		tf, err := os.Open(trustedPath)
		if err != nil {
			return fmt.Errorf("audit verify: -trusted: %w", err)
		}
		cp, err := audit.ReadTrustedCheckpoint(tf)
		tf.Close()
		if err != nil {
			return fmt.Errorf("audit verify: -trusted %s: %w", trustedPath, err)
		}
		trusted = &cp
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	var rep audit.Report
	switch {
	case trusted != nil:
		rep, err = audit.VerifyExtends(f, pub, *trusted)
	case pub != nil:
		rep, err = audit.VerifyWithKey(f, pub)
	default:
		rep, err = audit.Verify(f)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: %d events, %d checkpoints, head %s\n", rep.Events, rep.Checkpoints, hex.EncodeToString(rep.Head[:]))
	if c := rep.Certificate; c != nil {
		fmt.Fprintf(stdout, "certificate of destruction: message %s purged at %s under retention rule %s",
			c.MessageID, c.PurgedAt.Format(time.RFC3339), c.Rule)
		if c.Generation != "" {
			fmt.Fprintf(stdout, " (generation %s)", c.Generation)
		}
		fmt.Fprintf(stdout, "; event %d of the signed audit trail\n", c.Seq)
		switch d := c.KeysDestroyed; {
		case d != nil:
			fmt.Fprintf(stdout, "unrecoverable from backups too: its data key was wrapped by key version %d or older, and event %d records destroying every version below %d at %s\n",
				c.KeyVersionMax, d.Seq, d.MinVersion, d.At.Format(time.RFC3339))
		case c.KeyVersionMax > 0:
			fmt.Fprintf(stdout, "backups: its data key was wrapped by key version %d or older; no event in this file records destroying that version yet (the README's bound says by when)\n",
				c.KeyVersionMax)
		}
	} else if rep.First > 1 {
		fmt.Fprintf(stdout, "a segment from event %d: the events before it are not in this file\n", rep.First)
	}
	if trusted != nil {
		fmt.Fprintf(stdout, "extends the trusted checkpoint at size %d signed %s\n", trusted.Size, trusted.Time.Format(time.RFC3339))
	}
	if key == "" {
		// Without a trusted key the file is only shown to be consistent: anyone can re-sign a
		// rewritten trail with a key of their own. Print the whole key so it can be compared.
		fmt.Fprintf(stdout, "NOT checked against a trusted key: the export is signed by %s, the key in its own header;\n"+
			"compare it with the tenant's published audit key, or pass -key to check it\n",
			base64.StdEncoding.EncodeToString(rep.PublicKey))
	}
	return nil
}
