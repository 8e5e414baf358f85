// Command audit-verify checks a SecureText audit export offline: every event hash, the chain
// links, and every signed checkpoint, ending with one that covers the last event.
//
//	audit-verify [-key BASE64] FILE
//
// With -key, the export must be signed by that ed25519 public key (the tenant's published audit
// key). Without it, the key in the export's own header is used and its id is printed, so it can
// be compared by hand: a forger can always sign with a key of their own.
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"os"

	"github.com/securetext/securetext/workloads/audit"
)

func main() {
	key := flag.String("key", "", "trusted ed25519 public key, standard base64")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: audit-verify [-key BASE64] FILE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *key); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
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
			return fmt.Errorf("audit-verify: -key must be a base64 ed25519 public key (32 bytes)")
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
