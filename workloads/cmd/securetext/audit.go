// Command audit exports a tenant's audit trail and checks an export offline.
//
//	audit export -dsn DSN -tenant NAME (-local-key-file FILE | -keystore-url URL -cert FILE -key FILE -ca FILE) [-o FILE]
//	audit verify [-key BASE64] FILE
//
// export signs a checkpoint of the current chain head through the keystore (unless
// -checkpoint=false), then writes every event, every checkpoint and the signing public key
// as NDJSON. verify checks every event hash, the chain links, and every signed checkpoint,
// ending with one that covers the last event, and names the first bad sequence number.
//
// With -key, the export must be signed by that ed25519 public key (the tenant's published audit
// key). Without it, the key in the export's own header is used and its id is printed, so it can
// be compared by hand: a forger can always sign with a key of their own.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/securetext/securetext/workloads/audit"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "verify":
		err = verifyCommand(os.Args[2:])
	case "export":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = exportCommand(ctx, os.Args[2:], os.Stdout)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

const usage = `usage:
  audit export -dsn DSN -tenant NAME (-local-key-file FILE | -keystore-url URL -cert FILE -key FILE -ca FILE) [-o FILE] [-checkpoint=false]
  audit verify [-key BASE64] FILE
`

func verifyCommand(args []string) error {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	key := fs.String("key", "", "trusted ed25519 public key, standard base64")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("audit verify: want one FILE\n%s", usage)
	}
	return run(fs.Arg(0), *key)
}

func run(path, key string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()

	var rep audit.Report
	if key != "" {
		pub, err := base64.StdEncoding.DecodeString(key)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("audit verify: -key must be a base64 ed25519 public key (32 bytes)")
		}
		rep, err = audit.VerifyWithKey(f, pub)
		if err != nil {
			return err
		}
	} else {
		rep, err = audit.Verify(f)
		if err != nil {
			return err
		}
	}
	fmt.Printf("ok: %d events, %d checkpoints, head %s\n", rep.Events, rep.Checkpoints, hex.EncodeToString(rep.Head[:]))
	if key == "" {
		// Without a trusted key the file is only shown to be consistent: anyone can re-sign a
		// rewritten trail with a key of their own. Print the whole key so it can be compared.
		fmt.Printf("NOT checked against a trusted key: the export is signed by %s, the key in its own header;\n"+
			"compare it with the tenant's published audit key, or pass -key to check it\n",
			base64.StdEncoding.EncodeToString(rep.PublicKey))
	}
	return nil
}
