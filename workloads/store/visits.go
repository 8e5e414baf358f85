package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// LinkVisit is what one request on a link needs, read together by VisitLink.
type LinkVisit struct {
	Message Message
	// Session is the browser's session if it exists and belongs to the message's recipient;
	// whether it is still valid is for the caller to decide (Session.Valid).
	Session *Session
	// Parts are the message's parts in order, read only when asked for and Session is set.
	Parts []Part
}

// visitColumns are the columns of a link visit's rows (visitRow).
var visitColumns = prefixed("m.", messageColumns) + `, s.recipient_id, s.created_at, s.last_seen_at, s.expires_at, p.name, p.ciphertext`

// visitLinkSQL is VisitLink's query, built once: it runs on every page.
var visitLinkSQL = `SELECT ` + visitColumns + `
	FROM messages m
	LEFT JOIN sessions s ON s.id_hash = $2 AND s.recipient_id = m.recipient_id
	LEFT JOIN message_parts p ON $3 AND s.id_hash IS NOT NULL AND p.message_id = m.id
	WHERE m.link_token_hash = $1
	ORDER BY p.position`

// VisitLink returns the message whose link token hashes to linkHash together with session
// sessionHash (a zero hash for none) if that is a session of the message's recipient, and,
// with withParts, the parts the session may be about to see. A remembered patient's page
// needs all of it on every request, so it is one query instead of three. No such message is
// ErrNotFound.
//
// On PostgreSQL, concurrent calls share one statement (visitGroup). It is the one statement
// every page waits for, and a round trip costs both sides more than the query does.
func (s *Store) VisitLink(ctx context.Context, linkHash, sessionHash [32]byte, withParts bool) (LinkVisit, error) {
	call := visitCall{linkHash: linkHash, sessionHash: sessionHash, withParts: withParts}
	if s.visits != nil {
		return s.visits.Do(ctx, call)
	}
	var rd visitReader
	err := s.queryEach(ctx, visitLinkSQL, call.args(), func(scan func(dest ...any) error) error {
		r, err := scanVisit(scan)
		if err == nil {
			rd.add(r)
		}
		return err
	})
	if err != nil {
		return LinkVisit{}, failed("read link", err)
	}
	return rd.result(sessionHash)
}

// visitCall is one VisitLink.
type visitCall struct {
	linkHash, sessionHash [32]byte
	withParts             bool
}

func (c visitCall) args() []any { return []any{c.linkHash[:], c.sessionHash[:], c.withParts} }

// visitGroupSQL is visitLinkSQL for a group of visits in one statement: the arrays $1, $2 and
// $3 hold each visit's link hash, session hash and withParts, and each row starts with the
// visit's ordinal, from 1.
var visitGroupSQL = `SELECT v.i, ` + visitColumns + `
	FROM unnest($1::bytea[], $2::bytea[], $3::boolean[]) WITH ORDINALITY AS v (link, session, parts, i)
	JOIN messages m ON m.link_token_hash = v.link
	LEFT JOIN sessions s ON s.id_hash = v.session AND s.recipient_id = m.recipient_id
	LEFT JOIN message_parts p ON v.parts AND s.id_hash IS NOT NULL AND p.message_id = m.id
	ORDER BY v.i, p.position`

// visitGroup reads the link visits of concurrent VisitLink calls with one statement, in one
// round trip.
func (s *Store) visitGroup(ctx context.Context, calls []visitCall) ([]LinkVisit, []error, error) {
	links, sessions, parts := make([][]byte, len(calls)), make([][]byte, len(calls)), make([]bool, len(calls))
	for i, c := range calls {
		links[i], sessions[i], parts[i] = c.linkHash[:], c.sessionHash[:], c.withParts
	}
	readers := make([]visitReader, len(calls))
	err := s.queryEach(ctx, visitGroupSQL, []any{links, sessions, parts}, func(scan func(dest ...any) error) error {
		var i int64
		r, err := scanVisit(scan, &i)
		if err != nil {
			return err
		}
		if i < 1 || i > int64(len(readers)) {
			return fmt.Errorf("read links: row for visit %d of %d", i, len(readers))
		}
		readers[i-1].add(r)
		return nil
	})
	if err != nil {
		return nil, nil, failed("read links", err)
	}
	visits, errs := make([]LinkVisit, len(calls)), make([]error, len(calls))
	for i, c := range calls {
		visits[i], errs[i] = readers[i].result(c.sessionHash)
	}
	return visits, errs, nil
}

// queryEach runs a query that changes nothing and gives each of its rows to row.
func (s *Store) queryEach(ctx context.Context, sql string, args []any, row func(scan func(dest ...any) error) error) error {
	rows, err := s.db.query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// visitRow is one row of visitLinkSQL: the message and session columns repeat on each row,
// one row per part (or a single row without parts).
type visitRow struct {
	msg              Message
	sess             Session
	sessionRecipient sql.NullString
	part             sql.NullString
	ciphertext       []byte
}

// scanVisit scans a row of visitLinkSQL, or of visitGroupSQL with its ordinal into lead.
func scanVisit(scan func(dest ...any) error, lead ...any) (visitRow, error) {
	var (
		r   visitRow
		err error
	)
	r.msg, err = scanMessage(withColumns{scanFunc(scan), lead, []any{&r.sessionRecipient, timeDest{&r.sess.CreatedAt},
		timeDest{&r.sess.LastSeenAt}, timeDest{&r.sess.ExpiresAt}, &r.part, &r.ciphertext}})
	return r, err
}

// visitReader collects the rows of one visit.
type visitReader struct{ visit *LinkVisit }

func (rd *visitReader) add(r visitRow) {
	if rd.visit == nil {
		rd.visit = &LinkVisit{Message: r.msg}
		if r.sessionRecipient.Valid {
			r.sess.RecipientID = r.sessionRecipient.String
			rd.visit.Session = &r.sess
		}
	}
	if r.part.Valid {
		rd.visit.Parts = append(rd.visit.Parts, Part{Name: r.part.String, Ciphertext: r.ciphertext})
	}
}

// result is the visit read, with the session's id hash, or ErrNotFound if there was no row.
func (rd *visitReader) result(sessionHash [32]byte) (LinkVisit, error) {
	if rd.visit == nil {
		return LinkVisit{}, failed("read link", ErrNotFound)
	}
	if rd.visit.Session != nil {
		rd.visit.Session.IDHash = sessionHash
	}
	return *rd.visit, nil
}

// scanFunc is a row made of a scan function.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// prefixed qualifies each column of the comma-separated list columns with prefix.
func prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// withColumns scans a row's first columns into lead, the columns after them into the dest
// its caller gives, and the rest into more.
type withColumns struct {
	r          row
	lead, more []any
}

func (w withColumns) Scan(dest ...any) error {
	return w.r.Scan(append(append(w.lead[:len(w.lead):len(w.lead)], dest...), w.more...)...)
}
