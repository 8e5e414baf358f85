// Command securetext runs SecureText's workloads: one binary, one image, a subcommand each.
//
//	securetext dev         everything on loopback with embedded defaults, for trying it out
//	securetext gateway     one tenant's gateway: SMTP submission, REST API, SMS notifier
//	securetext viewer      one tenant's viewer: the patient's pages behind the texted link
//	securetext keystore    one tenant's keystore: wraps data keys, signs audit checkpoints and discovery manifests
//	securetext audit       export a tenant's audit trail or a purge's certificate of destruction, and verify either offline
//	securetext discovery   export what a legal hold keeps with a signed manifest, and verify it offline
//	securetext sender      make a sender's credentials and the hashes for the senders file
//	securetext compliance  make a compliance officer's key (discovery exports only) and its hash for the senders file
//	securetext version     print the release, Go version and platform (also --version)
//
// Every flag of gateway can also be set as SECURETEXT_GATEWAY_<FLAG> (upper case, '-' as '_'),
// every flag of viewer as SECURETEXT_VIEWER_<FLAG> and every flag of keystore as
// SECURETEXT_KEYSTORE_<FLAG>, as the operator does in the tenant's Deployments; a flag on the
// command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/securetext/securetext/workloads/gctune"
)

// version is the release this binary was built from, stamped by make (-X main.version=…).
var version = "dev"

// versionLine is what securetext version (or --version) prints: the release, and the toolchain
// and platform it was built with.
func versionLine() string {
	return fmt.Sprintf("securetext %s (%s, %s/%s)", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func main() {
	gctune.Tune()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "securetext:", err)
		os.Exit(1)
	}
}

const usage = `usage: securetext <command> [flags]

commands:
  dev         run gateway, keystore (local key file), SQLite and the console SMS provider on
              loopback, and print how to send a first message
  gateway     run one tenant's gateway (SMTP submission, REST API, SMS notifier)
  viewer      run one tenant's viewer (the patient's pages behind the texted link)
  keystore    run one tenant's keystore (data keys and audit signatures, Vault Transit or a local key file)
  audit       export a tenant's audit trail (audit export) or a purge's certificate of destruction (audit
              certificate), or check either offline (audit verify)
  discovery   export what a legal hold keeps, decrypted, with a manifest signed by the audit key
              (discovery export), or check an export offline (discovery verify)
  sender      make a sender's SMTP password and API key, and the entry for the senders file
  compliance  make a compliance officer's key, which exports legal holds and nothing else, and the
              entry for the senders file
  version     print the version (also --version)

"securetext <command> -h" lists the command's flags.
`

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr, nil)
	case "gateway":
		return runGateway(ctx, args[1:], lookupEnv, stderr, nil)
	case "viewer":
		return runViewer(ctx, args[1:], lookupEnv, stderr, nil)
	case "keystore":
		return runKeystore(ctx, args[1:], lookupEnv, stdout, stderr, nil)
	case "audit":
		return runAudit(ctx, args[1:], stdout, stderr)
	case "discovery":
		return runDiscovery(ctx, args[1:], stdout, stderr)
	case "sender":
		return runSender(ctx, args[1:], stdout, stderr)
	case "compliance":
		return runCompliance(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionLine())
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
