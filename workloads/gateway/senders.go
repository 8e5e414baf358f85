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

// SendersFile is the senders configuration, mounted from a Kubernetes Secret.
type SendersFile struct {
	Senders []Sender `json:"senders"`
}

// Senders authenticates senders.
type Senders struct {
	ids        map[string]bool
	byUsername map[string]*Sender
	byKeyHash  map[[32]byte]string
	// dummy is verified when a username is unknown, so that unknown and known users take the
	// same time.
	dummy string
}

// Has reports whether id is a sender's id.
func (s *Senders) Has(id string) bool { return s.ids[id] }

// APIKeyPrefix starts every API key, so that secret scanners can recognise leaked ones.
const APIKeyPrefix = "stk_"

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
	s, err := NewSenders(f.Senders)
	if err != nil {
		return nil, fmt.Errorf("senders file %s: %w", path, err)
	}
	return s, nil
}

// NewSenders checks and indexes sender accounts.
func NewSenders(list []Sender) (*Senders, error) {
	ids := map[string]bool{}
	s := &Senders{ids: ids, byUsername: map[string]*Sender{}, byKeyHash: map[[32]byte]string{}}
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
			hexHash, ok := strings.CutPrefix(h, "sha256:")
			raw, err := hex.DecodeString(hexHash)
			if !ok || err != nil || len(raw) != sha256.Size {
				return nil, fmt.Errorf("sender %s: apiKeyHashes[%d] must be sha256:<64 hex digits>", snd.ID, j)
			}
			var k [32]byte
			copy(k[:], raw)
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
