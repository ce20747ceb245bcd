package mask

// StreamSet keeps one Stream per key, such as "choices[0].delta.content",
// "choices[0].delta.tool_calls[1].function.arguments" or
// "output_text[item,part]": it is what a rewriter of a streamed response
// uses. A key is the Path of its stream's findings.
//
// A StreamSet is not safe for concurrent use.
type StreamSet struct {
	m       *Masker
	where   string
	streams map[string]*Stream
	keys    []string
	done    bool
}

// NewStreamSet returns an empty StreamSet whose findings carry where.
func (m *Masker) NewStreamSet(where string) *StreamSet {
	return &StreamSet{m: m, where: where, streams: make(map[string]*Stream)}
}

// Write adds chunk to the stream of key (started by its first Write) and
// returns what is safe to emit now (Stream.Write). After Close(key),
// CloseAll or Abort, chunks for a closed stream are dropped.
func (ss *StreamSet) Write(key string, chunk []byte) []byte {
	if ss.done {
		return nil
	}
	s := ss.streams[key]
	if s == nil {
		s = ss.m.NewStream(ss.where, key)
		ss.streams[key] = s
		ss.keys = append(ss.keys, key)
	}
	return s.Write(chunk)
}

// Close ends the stream of key (when its field is complete, say at a
// choice's finish_reason) and returns what it held, masked.
func (ss *StreamSet) Close(key string) []byte {
	if s := ss.streams[key]; s != nil {
		return s.Close()
	}
	return nil
}

// CloseAll ends every stream and returns, by key, the masked text that the
// streams still held; keys with nothing to emit are left out. Keys gives an
// order in which to emit them.
func (ss *StreamSet) CloseAll() map[string][]byte {
	ss.done = true
	out := make(map[string][]byte)
	for _, k := range ss.keys {
		if b := ss.streams[k].Close(); len(b) > 0 {
			out[k] = b
		}
	}
	return out
}

// Abort ends every stream, dropping what they hold.
func (ss *StreamSet) Abort() {
	ss.done = true
	for _, k := range ss.keys {
		ss.streams[k].Abort()
	}
}

// Keys returns the keys in the order of their first Write.
func (ss *StreamSet) Keys() []string { return append([]string(nil), ss.keys...) }

// Held returns how many bytes the streams hold back in all.
func (ss *StreamSet) Held() int {
	n := 0
	for _, s := range ss.streams {
		n += s.Held()
	}
	return n
}

// Findings returns the findings of all streams, merged, in the order of the
// keys.
func (ss *StreamSet) Findings() []Finding {
	var fs findingSet
	for _, k := range ss.keys {
		fs.merge(ss.streams[k].fs.list)
	}
	return fs.findings()
}
