package gateway

import (
	"bytes"
	"net"
	"testing"
)

// countingConn records each Write that reaches the network.
type countingConn struct {
	net.Conn
	writes [][]byte
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(b))
	return len(b), nil
}

// TestSMTPReplyLinesShareAWrite: the lines of a multi-line reply leave in one write, single
// replies and TLS records at once, and nothing is lost or reordered.
func TestSMTPReplyLinesShareAWrite(t *testing.T) {
	under := &countingConn{}
	c := &smtpConn{Conn: under}
	ehlo := []string{"250-text.clinic.example Hello\r\n", "250-PIPELINING\r\n", "250-8BITMIME\r\n", "250 SIZE 10485760\r\n"}
	for _, line := range ehlo {
		if n, err := c.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", line, n, err)
		}
	}
	if len(under.writes) != 1 || string(under.writes[0]) != ehlo[0]+ehlo[1]+ehlo[2]+ehlo[3] {
		t.Fatalf("EHLO reply reached the network as %q, want one write of all four lines", under.writes)
	}

	tlsRecord := []byte{0x17, 0x03, 0x03, 0x00, 0x02, '2', '-', '\r', '\n'}
	for _, b := range [][]byte{[]byte("354 Start mail input\r\n"), tlsRecord, []byte("250-x\r")} {
		under.writes = nil
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if len(under.writes) != 1 || !bytes.Equal(under.writes[0], b) {
			t.Fatalf("Write(%q) reached the network as %q, want it at once", b, under.writes)
		}
	}
}
