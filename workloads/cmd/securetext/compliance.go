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

// runCompliance prints a new key for a compliance account: the key once, for the compliance
// officer, and its hash, for the senders file. The key exports legal holds (securetext
// discovery export) and does nothing else.
func runCompliance(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("securetext compliance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "the compliance account's id, e.g. legal-1; the audit trail names exports by it (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" || fs.NArg() > 0 {
		return errors.New("compliance: -id is required, and nothing else")
	}
	acc, key, err := gateway.NewComplianceCredentials(*id)
	if err != nil {
		return fmt.Errorf("compliance: -id: %w", err)
	}
	entry, err := yaml.Marshal(struct {
		Compliance []gateway.ComplianceAccount `json:"compliance"`
	}{[]gateway.ComplianceAccount{acc}})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `# Hand this key to the compliance officer once; it is not stored anywhere. It exports
# what legal holds keep (securetext discovery export -key-file FILE) and nothing else:
#   Compliance key: %s
#
# Add this to the tenant's senders file, beside senders: (it holds only the key's hash):
%s`, key, entry)
	return nil
}
