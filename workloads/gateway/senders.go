package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/securetext/securetext/workloads/discovery"
	"github.com/securetext/securetext/workloads/password"
	"github.com/securetext/securetext/workloads/token"
)

// Sender is an account that may submit messages: an EHR, a clinic's mail server, a person.
// Its secrets are stored only as hashes: the SMTP password as argon2id, API keys as SHA-256
// (they are 256-bit random, so a fast hash is enough and lookups stay cheap).
type Sender struct {
	ID               string   `json:"id"`
	SMTPUsername     string   `json:"smtpUsername,omitempty"`
	SMTPPasswordHash string   `json:"smtpPasswordHash,omitempty"`
	APIKeyHashes     []string `json:"apiKeyHashes,omitempty"` // "sha256:<hex>"
}

// ComplianceAccount is a compliance officer's account: its API keys export what a legal hold
// keeps (GET /v1/holds/{name}/export), decrypted, and do nothing else; a sender's API key
// cannot export, and a compliance key cannot send or read messages. Keys are stored as SHA-256
// hashes, as senders' are, and start with ComplianceKeyPrefix.
type ComplianceAccount struct {
	ID           string   `json:"id"`
	APIKeyHashes []string `json:"apiKeyHashes"` // "sha256:<hex>"
}

// SendersFile is the senders configuration, mounted from a Kubernetes Secret. Compliance
// accounts are listed apart from senders; a file without any makes no export possible.
type SendersFile struct {
	Senders    []Sender            `json:"senders"`
	Compliance []ComplianceAccount `json:"compliance,omitempty"`
}

// Senders authenticates senders and compliance accounts.
type Senders struct {
	ids        map[string]bool
	byUsername map[string]*Sender
	byKeyHash  map[[32]byte]string
	// compliance maps the key hashes of compliance accounts to their ids.
	compliance map[[32]byte]string
	// dummy is verified when a username is unknown, so that unknown and known users take the
	// same time.
	dummy string
}

// Has reports whether id is a sender's id.
func (s *Senders) Has(id string) bool { return s.ids[id] }

// APIKeyPrefix starts every API key, so that secret scanners can recognise leaked ones.
const APIKeyPrefix = "stk_"

// ComplianceKeyPrefix starts every compliance account's key: another prefix, so that the key's
// scope shows at a glance and a scanner can tell a leaked export key from a sender's.
const ComplianceKeyPrefix = "stc_"

// ErrBadCredentials is a failed login; it never says which part was wrong.
var ErrBadCredentials = errors.New("invalid credentials")

// LoadSenders reads a senders file (YAML or JSON).
func LoadSenders(path string) (*Senders, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read senders file: %w", err)
	}
	var f SendersFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("senders file %s: %w", path, err)
	}
	s, err := NewSendersFile(f)
	if err != nil {
		return nil, fmt.Errorf("senders file %s: %w", path, err)
	}
	return s, nil
}

// NewSendersFile checks and indexes the senders and compliance accounts of f.
func NewSendersFile(f SendersFile) (*Senders, error) {
	s, err := NewSenders(f.Senders)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for i, acc := range f.Compliance {
		switch {
		case !discovery.ValidWord(acc.ID):
			return nil, fmt.Errorf("compliance account %d: id must be 1 to 253 printable ASCII characters without spaces", i)
		case ids[acc.ID]:
			return nil, fmt.Errorf("compliance account %s appears twice", acc.ID)
		case s.ids[acc.ID]:
			// The audit trail names either by id alone.
			return nil, fmt.Errorf("compliance account %s has the id of a sender; give it another", acc.ID)
		case len(acc.APIKeyHashes) == 0:
			return nil, fmt.Errorf("compliance account %s: apiKeyHashes is empty (make a key with `securetext compliance`)", acc.ID)
		}
		ids[acc.ID] = true
		for j, h := range acc.APIKeyHashes {
			k, ok := parseKeyHash(h)
			if !ok {
				return nil, fmt.Errorf("compliance account %s: apiKeyHashes[%d] must be sha256:<64 hex digits>", acc.ID, j)
			}
			if _, dup := s.byKeyHash[k]; dup {
				return nil, fmt.Errorf("compliance account %s: apiKeyHashes[%d] is used twice", acc.ID, j)
			}
			if _, dup := s.compliance[k]; dup {
				return nil, fmt.Errorf("compliance account %s: apiKeyHashes[%d] is used twice", acc.ID, j)
			}
			s.compliance[k] = acc.ID
		}
	}
	return s, nil
}

// parseKeyHash reads "sha256:<64 hex digits>".
func parseKeyHash(h string) ([32]byte, bool) {
	var k [32]byte
	hexHash, ok := strings.CutPrefix(h, "sha256:")
	raw, err := hex.DecodeString(hexHash)
	if !ok || err != nil || len(raw) != sha256.Size {
		return k, false
	}
	copy(k[:], raw)
	return k, true
}

// NewSenders checks and indexes sender accounts.
func NewSenders(list []Sender) (*Senders, error) {
	ids := map[string]bool{}
	s := &Senders{ids: ids, byUsername: map[string]*Sender{}, byKeyHash: map[[32]byte]string{}, compliance: map[[32]byte]string{}}
	for i := range list {
		snd := &list[i]
		switch {
		case snd.ID == "" || strings.ContainsAny(snd.ID, " \t\r\n"):
			return nil, fmt.Errorf("sender %d: id must be non-empty without spaces", i)
		case ids[snd.ID]:
			return nil, fmt.Errorf("sender %s appears twice", snd.ID)
		case (snd.SMTPUsername == "") != (snd.SMTPPasswordHash == ""):
			return nil, fmt.Errorf("sender %s: smtpUsername and smtpPasswordHash go together", snd.ID)
		}
		ids[snd.ID] = true
		if snd.SMTPUsername != "" {
			if err := password.Check(snd.SMTPPasswordHash); err != nil {
				return nil, fmt.Errorf("sender %s: smtpPasswordHash: %w (make one with `securetext sender`)", snd.ID, err)
			}
			if _, dup := s.byUsername[snd.SMTPUsername]; dup {
				return nil, fmt.Errorf("sender %s: SMTP username is used by another sender", snd.ID)
			}
			s.byUsername[snd.SMTPUsername] = snd
			s.dummy = snd.SMTPPasswordHash
		}
		for j, h := range snd.APIKeyHashes {
			k, ok := parseKeyHash(h)
			if !ok {
				return nil, fmt.Errorf("sender %s: apiKeyHashes[%d] must be sha256:<64 hex digits>", snd.ID, j)
			}
			if _, dup := s.byKeyHash[k]; dup {
				return nil, fmt.Errorf("sender %s: apiKeyHashes[%d] is used twice", snd.ID, j)
			}
			s.byKeyHash[k] = snd.ID
		}
	}
	return s, nil
}

// SMTPLogin returns the id of the sender with these SMTP credentials.
func (s *Senders) SMTPLogin(ctx context.Context, username, pass string) (string, error) {
	snd, ok := s.byUsername[username]
	if !ok {
		if s.dummy != "" {
			_ = password.Verify(ctx, pass, s.dummy) // same cost as a known user
		}
		return "", ErrBadCredentials
	}
	if err := password.Verify(ctx, pass, snd.SMTPPasswordHash); err != nil {
		if errors.Is(err, password.ErrMismatch) {
			return "", ErrBadCredentials
		}
		return "", err
	}
	return snd.ID, nil
}

// APIKeyLogin returns the id of the sender holding key. The key's SHA-256 is looked up; a
// forged key would need a SHA-256 preimage.
func (s *Senders) APIKeyLogin(key string) (string, error) {
	if !strings.HasPrefix(key, APIKeyPrefix) {
		return "", ErrBadCredentials
	}
	id, ok := s.byKeyHash[token.Hash(key)]
	if !ok {
		return "", ErrBadCredentials
	}
	return id, nil
}

// ComplianceKeyLogin returns the id of the compliance account holding key, looked up by its
// SHA-256 as APIKeyLogin looks up a sender's.
func (s *Senders) ComplianceKeyLogin(key string) (string, error) {
	if !strings.HasPrefix(key, ComplianceKeyPrefix) {
		return "", ErrBadCredentials
	}
	id, ok := s.compliance[token.Hash(key)]
	if !ok {
		return "", ErrBadCredentials
	}
	return id, nil
}

// HasCompliance reports whether any compliance account is configured: without one, no
// discovery export can be made.
func (s *Senders) HasCompliance() bool { return len(s.compliance) > 0 }

// NewComplianceCredentials makes a compliance account with a fresh key (256 bits from
// crypto/rand), returning the account (hash only) and the key to hand over once.
func NewComplianceCredentials(id string) (ComplianceAccount, string, error) {
	if !discovery.ValidWord(id) {
		return ComplianceAccount{}, "", fmt.Errorf("compliance account id %q must be 1 to 253 printable ASCII characters without spaces", id)
	}
	key := ComplianceKeyPrefix + token.NewLong()
	kh := token.Hash(key)
	return ComplianceAccount{ID: id, APIKeyHashes: []string{"sha256:" + hex.EncodeToString(kh[:])}}, key, nil
}

// NewCredentials makes a sender with a fresh SMTP password and API key, returning the sender
// (hashes only) and the secrets to hand over once.
func NewCredentials(ctx context.Context, id, smtpUsername string) (snd Sender, smtpPassword, apiKey string, err error) {
	smtpPassword = token.New()
	apiKey = APIKeyPrefix + token.NewLong()
	hash, err := password.Hash(ctx, smtpPassword)
	if err != nil {
		return Sender{}, "", "", err
	}
	kh := token.Hash(apiKey)
	return Sender{
		ID: id, SMTPUsername: smtpUsername, SMTPPasswordHash: hash,
		APIKeyHashes: []string{"sha256:" + hex.EncodeToString(kh[:])},
	}, smtpPassword, apiKey, nil
}
