package serve

import "net/http"

// StatusRecorder is a ResponseWriter that remembers the status code the handler answered, for
// metrics. Code starts as whatever the caller sets (http.StatusOK: a handler that writes a body
// without WriteHeader answers 200).
type StatusRecorder struct {
	http.ResponseWriter
	Code  int
	wrote bool
}

func (s *StatusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.Code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *StatusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush, deadlines).
func (s *StatusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
