package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/securetext/securetext/workloads/audit"
	"github.com/securetext/securetext/workloads/tenantpki"
)

// The checkpoint API: GET /v1/checkpoint answers the last checkpoint signed for the tenant
// ({"checkpoint": null} before the first); POST /v1/checkpoint with {"events": [...]} (the
// events after it, as audit.EventRecord) answers the new checkpoint, or 409 when the events do
// not extend the last one.

type checkpointAnswer struct {
	Checkpoint *audit.CheckpointRecord `json:"checkpoint"`
}

func (s *Server) lastCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, ok, err := s.checkpoints.LastCheckpoint(r.Context())
	if err != nil {
		s.fail(w, r, "read the last audit checkpoint", err)
		return
	}
	var ans checkpointAnswer
	if ok {
		ans.Checkpoint = audit.NewCheckpointRecord(cp)
	}
	writeJSONValue(w, ans)
}

func (s *Server) extendCheckpoint(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Events []*audit.EventRecord `json:"events"`
	}
	const example = `{"events": [<the events after the last signed checkpoint, as in an audit export>]}`
	if !decodeRequestMax(w, r, &req, false, example, maxCheckpointBody) {
		return
	}
	if len(req.Events) == 0 || len(req.Events) > audit.MaxExtension {
		badRequest(w, fmt.Sprintf("field events must hold 1 to %d events, not %d; send longer gaps in steps", audit.MaxExtension, len(req.Events)))
		return
	}
	events := make([]audit.Event, len(req.Events))
	for i, rec := range req.Events {
		var err error
		if rec == nil {
			err = errors.New("null")
		} else {
			events[i], err = rec.Event()
		}
		if err != nil {
			badRequest(w, fmt.Sprintf("events[%d] is not an audit event (%v); send it as an audit export writes it", i, err))
			return
		}
	}
	cp, err := s.checkpoints.ExtendCheckpoint(r.Context(), events)
	switch {
	case errors.Is(err, audit.ErrNotExtension):
		s.refuseCheckpoint(r, events, err)
		writeProblem(w, http.StatusConflict, "not-extension", "Chain does not extend the last signed checkpoint",
			err.Error()+"; the audit trail in the database differs from the one this keystore signed")
		return
	case errors.Is(err, audit.ErrStateChanged):
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err != nil {
		s.fail(w, r, "sign an audit checkpoint", err)
		return
	}
	writeJSONValue(w, checkpointAnswer{Checkpoint: audit.NewCheckpointRecord(cp)})
}

// refuseCheckpoint records a refused extension in the keystore's own log (the database's
// chain is what is in doubt, so the record cannot go there) and counts it for the alert.
func (s *Server) refuseCheckpoint(r *http.Request, events []audit.Event, err error) {
	s.checkpointRefusals.Add(1)
	actor := "keystore-client:unknown"
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		if _, component, err := tenantpki.Identity(r.TLS.PeerCertificates[0]); err == nil {
			actor = "keystore-client:" + component
		}
	}
	s.log.LogAttrs(r.Context(), slog.LevelError, "keystore refused to sign an audit checkpoint", slog.Group("audit",
		slog.Time("time", time.Now().UTC()),
		slog.String("kind", string(audit.KindCheckpointRefused)),
		slog.String("actor", actor),
		slog.String("tenant", s.tenant),
		slog.Any("detail", map[string]string{
			"reason":       err.Error(),
			"offered_from": strconv.FormatUint(events[0].Seq, 10),
			"offered_to":   strconv.FormatUint(events[len(events)-1].Seq, 10),
		})))
}

// CheckpointRefusals returns how many extensions were refused since the server started, for
// the metric securetext_keystore_checkpoint_refusals_total: above zero means someone offered
// a chain that is not the one signed before.
func (s *Server) CheckpointRefusals() uint64 { return s.checkpointRefusals.Load() }

// LastCheckpoint implements audit.CheckpointSigner.
func (c *Client) LastCheckpoint(ctx context.Context) (audit.Checkpoint, bool, error) {
	var ans checkpointAnswer
	if err := c.call(ctx, "last-checkpoint", http.MethodGet, "/v1/checkpoint", nil, &ans); err != nil {
		return audit.Checkpoint{}, false, err
	}
	if ans.Checkpoint == nil {
		return audit.Checkpoint{}, false, nil
	}
	cp, err := ans.Checkpoint.Checkpoint()
	if err != nil {
		return audit.Checkpoint{}, false, fmt.Errorf("keystore: last-checkpoint: the answer holds no valid checkpoint: %w", err)
	}
	return cp, true, nil
}

// ExtendCheckpoint implements audit.CheckpointSigner. A refusal wraps audit.ErrNotExtension.
func (c *Client) ExtendCheckpoint(ctx context.Context, events []audit.Event) (audit.Checkpoint, error) {
	recs := make([]*audit.EventRecord, len(events))
	for i, e := range events {
		recs[i] = audit.NewEventRecord(e)
	}
	body, err := json.Marshal(struct {
		Events []*audit.EventRecord `json:"events"`
	}{recs})
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("keystore: extend-checkpoint: encode request: %w", err)
	}
	var ans checkpointAnswer
	if err := c.call(ctx, "extend-checkpoint", http.MethodPost, "/v1/checkpoint", body, &ans); err != nil {
		return audit.Checkpoint{}, err
	}
	if ans.Checkpoint == nil {
		return audit.Checkpoint{}, errors.New("keystore: extend-checkpoint: the answer holds no checkpoint")
	}
	cp, err := ans.Checkpoint.Checkpoint()
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("keystore: extend-checkpoint: the answer holds no valid checkpoint: %w", err)
	}
	return cp, nil
}

// checkpointStatePath is where a tenant's last signed checkpoint is kept in its state mount.
const checkpointStatePath = "audit-checkpoint"

// VaultCheckpointState keeps the last signed checkpoint in a Vault KV version 2 secret,
// <mount>/data/audit-checkpoint, written with check-and-set (Vault refuses a write whose cas
// is not the current version), so that several keystore replicas never both record a
// checkpoint on the same predecessor. The tenant's keystore policy is the only one that can
// write it (vaultpolicy.Keystore).
type VaultCheckpointState struct {
	t    *Transit
	path string
}

// CheckpointState returns the checkpoint state in the KV v2 mount at mount.
func (t *Transit) CheckpointState(mount string) *VaultCheckpointState {
	return &VaultCheckpointState{t: t, path: strings.Trim(mount, "/") + "/data/" + checkpointStatePath}
}

// Load implements audit.NotaryState: GET <mount>/data/audit-checkpoint.
func (v *VaultCheckpointState) Load(ctx context.Context) (audit.Checkpoint, uint64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, v.t.cfg.Timeout)
	defer cancel()
	var out struct {
		Data struct {
			Data     *audit.CheckpointRecord `json:"data"`
			Metadata struct {
				Version uint64 `json:"version"`
			} `json:"metadata"`
		} `json:"data"`
	}
	status, err := v.t.callPath(ctx, v.path, nil, &out)
	switch {
	case status == http.StatusNotFound:
		return audit.Checkpoint{}, 0, false, nil
	case err != nil:
		return audit.Checkpoint{}, 0, false, err
	case out.Data.Data == nil || out.Data.Metadata.Version == 0:
		return audit.Checkpoint{}, 0, false, fmt.Errorf("keystore: %s holds no checkpoint; restore it from Vault's history or a trusted export", v.path)
	}
	cp, err := out.Data.Data.Checkpoint()
	if err != nil {
		return audit.Checkpoint{}, 0, false, fmt.Errorf("keystore: %s holds no valid checkpoint: %w", v.path, err)
	}
	return cp, out.Data.Metadata.Version, true, nil
}

// Save implements audit.NotaryState: POST <mount>/data/audit-checkpoint with options.cas.
func (v *VaultCheckpointState) Save(ctx context.Context, cp audit.Checkpoint, version uint64) error {
	ctx, cancel := context.WithTimeout(ctx, v.t.cfg.Timeout)
	defer cancel()
	var out struct {
		Errors []string `json:"errors"`
	}
	body := map[string]any{"options": map[string]any{"cas": version}, "data": audit.NewCheckpointRecord(cp)}
	status, err := v.t.callPath(ctx, v.path, body, &out)
	if status == http.StatusBadRequest && len(out.Errors) > 0 && strings.Contains(out.Errors[0], "check-and-set") {
		return fmt.Errorf("%w: Vault's version is no longer %d", audit.ErrStateChanged, version)
	}
	return err
}

// FileCheckpointState keeps the last signed checkpoint in a file beside a local key file: the
// development backend's counterpart of VaultCheckpointState, for one process at a time.
type FileCheckpointState struct {
	path string
	mu   sync.Mutex
}

// NewFileCheckpointState keeps the state in path (created on the first checkpoint, mode 0600).
func NewFileCheckpointState(path string) *FileCheckpointState {
	return &FileCheckpointState{path: path}
}

// LocalCheckpointStatePath is the state file that goes with a local key file.
func LocalCheckpointStatePath(keyFile string) string { return keyFile + ".checkpoint" }

type fileCheckpointState struct {
	Version    uint64                  `json:"version"`
	Checkpoint *audit.CheckpointRecord `json:"checkpoint"`
}

// Load implements audit.NotaryState.
func (f *FileCheckpointState) Load(context.Context) (audit.Checkpoint, uint64, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.read()
	if err != nil || st.Version == 0 {
		return audit.Checkpoint{}, 0, false, err
	}
	cp, err := st.Checkpoint.Checkpoint()
	if err != nil {
		return audit.Checkpoint{}, 0, false, fmt.Errorf("keystore: %s holds no valid checkpoint: %w", f.path, err)
	}
	return cp, st.Version, true, nil
}

// Save implements audit.NotaryState. The file is replaced by a rename, so a crash leaves the
// old state or the new one.
func (f *FileCheckpointState) Save(_ context.Context, cp audit.Checkpoint, version uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.read()
	if err != nil {
		return err
	}
	if st.Version != version {
		return fmt.Errorf("%w: %s is at version %d, not %d", audit.ErrStateChanged, f.path, st.Version, version)
	}
	b, err := json.Marshal(fileCheckpointState{Version: version + 1, Checkpoint: audit.NewCheckpointRecord(cp)})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), filepath.Base(f.path)+".*")
	if err != nil {
		return fmt.Errorf("keystore: record audit checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err = tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path)
	}
	if err != nil {
		return fmt.Errorf("keystore: record audit checkpoint in %s: %w", f.path, err)
	}
	return nil
}

func (f *FileCheckpointState) read() (fileCheckpointState, error) {
	var st fileCheckpointState
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err == nil && st.Version > 0 && st.Checkpoint == nil {
		err = errors.New("no checkpoint")
	}
	if err != nil {
		return st, fmt.Errorf("keystore: read audit checkpoint state %s: %w", f.path, err)
	}
	return st, nil
}
