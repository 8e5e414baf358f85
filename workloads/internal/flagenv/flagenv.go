// Package flagenv lets environment variables stand in for command-line flags, the way
// Kubernetes manifests configure containers: flag -vault-addr of a command with prefix
// SECURETEXT_KEYSTORE_ is read from SECURETEXT_KEYSTORE_VAULT_ADDR. A flag given on the
// command line wins over the environment.
package flagenv

import (
	"flag"
	"fmt"
	"strings"
)

// Name returns the environment variable that stands in for flag name.
func Name(prefix, name string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Apply sets the flags of fs from the environment (lookupEnv, e.g. os.LookupEnv). Call it
// before fs.Parse, so that the command line overrides. An invalid value is an error naming
// the variable.
func Apply(fs *flag.FlagSet, prefix string, lookupEnv func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := Name(prefix, f.Name)
		if v, ok := lookupEnv(name); ok && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: invalid value %q for -%s: %w", name, v, f.Name, e)
			}
		}
	})
	return err
}
