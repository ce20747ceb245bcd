package recorder

import (
	"time"

	"github.com/promptrail/promptrail/audit"
)

// BeginConnection starts the record of a connection to a target address
// that is not decrypted: the proxy splices it (after Spool) or refuses it.
// Such a record has no request or response, only the workload, the
// connection, the decision and, for a splice, the bytes it carried.
func (r *Recorder) BeginConnection(conn audit.Connection, w audit.Workload) *Exchange {
	start := time.Now()
	return &Exchange{r: r, start: start, rec: audit.Record{
		ID: audit.NewID(start), Kind: audit.KindConnection, AgentID: r.cfg.AgentID, Node: r.cfg.Node,
		Start: start.UTC(), Workload: w, Connection: conn,
	}}
}

// A nil *Exchange (a proxy without a recorder) records nothing.

// Refuse finishes a connection record: the connection was closed and
// nothing went upstream; rule and why say what made it so.
func (e *Exchange) Refuse(rule, why string) {
	if e == nil {
		return
	}
	e.rec.Decision = audit.Decision{Action: "refuse", Rule: rule, Message: why}
	e.finish(false)
}

// Spliced sets the decision of a connection record before it is spooled:
// it is passed through undecrypted.
func (e *Exchange) Spliced(rule, why string) {
	if e == nil {
		return
	}
	e.rec.Decision = audit.Decision{Action: "splice", Rule: rule, Message: why}
}

// SpliceDone finishes a spliced connection's record with what it carried;
// err, if not nil, is how it ended.
func (e *Exchange) SpliceDone(sent, received int64, err error) {
	if e == nil {
		return
	}
	e.rec.Connection.BytesSent, e.rec.Connection.BytesReceived = sent, received
	if err != nil {
		e.rec.Error = err.Error()
	}
	e.finish(err != nil)
}
