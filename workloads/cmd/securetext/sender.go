package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"github.com/securetext/securetext/workloads/gateway"
)

// runSender prints new credentials for a sender: the secrets once, for the sender, and the
// hashes, for the senders file.
func runSender(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("securetext sender", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "the sender's account id, e.g. ehr (required)")
	username := fs.String("smtp-username", "", "SMTP username (default: the id)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("-id is required")
	}
	if *username == "" {
		*username = *id
	}
	snd, pass, key, err := gateway.NewCredentials(ctx, *id, *username)
	if err != nil {
		return err
	}
	entry, err := yaml.Marshal(gateway.SendersFile{Senders: []gateway.Sender{snd}})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `# Hand these to the sender once; they are not stored anywhere:
#   SMTP username: %s
#   SMTP password: %s
#   API key:       %s
#
# Add this to the tenant's senders file (it holds only hashes):
%s`, *username, pass, key, entry)
	return nil
}
