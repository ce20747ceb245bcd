package store

// Key layout. Every key starts with a one-letter table name and a slash;
// integers are big-endian so that byte order is numeric order. Record IDs
// are ULIDs: 26 characters in r/ keys, 16 raw bytes in index postings
// (the two sort alike). A key that ends in an ID is parsed from its end,
// so values before it may hold any byte.
//
// Bucketed tables: everything about a record lives under its time bucket,
// so retention drops a whole bucket with one DropPrefix.
//
//	b/<bucket 8>/r/<id>                                    <leaf index 8> + audit.Record.Encode() bytes
//	b/<bucket 8>/x/<field>\x00<value>\x00<max 16><min 16>  index posting: raw IDs, 16 bytes each, ascending
//
// <bucket> is the start of the bucket in Unix seconds: the ULID time of the
// record's ID truncated to Config.Bucket. Index fields: ns (namespace), wl
// (workload identity, pod, owner, unit, container and comm), model,
// finding (rule), action and agent.
//
// Badger's cost is mostly per key, so an index is written as postings, not
// a key per record and value: one posting per (bucket, field, value) and
// commit, holding the IDs of that commit's records with that value. Its
// key ends in its newest and oldest IDs (unique, as an ID is stored once),
// so a query walks postings newest first and skips, by key alone, those
// wholly outside its range. Postings of concurrent agents overlap in time;
// query.go merges them. The leaf index rides in front of the record so
// that Get and Verify need no key of their own for it.
//
// Chains, one per agent:
//
//	c/<agent>                         head, JSON {seq, hash, id}
//	s/<agent>\x00<seq 8>              id (26 bytes) + record hash (32 bytes raw)
//	k/<agent>\x00<seq 8>\x00<id>      chain issue, JSON (see ChainIssue)
//
// s/ keys follow the chain the head follows: a record that moves the head
// sets its seq's key. Storing the hash beside the id lets Verify check the
// links of a chain without decoding its records twice.
//
// Merkle log (RFC 6962):
//
//	m/t/<first leaf 8>          log segment: the leaves [first, first+n) one commit
//	                            appended and the nodes they created, as
//	                            <n 8>, n × (leaf hash 32 + id 26), then the hash
//	                            (32) of every node above the leaves whose last
//	                            leaf is among them, by level (1 up), then index
//	m/size                      tree size, 8 bytes
//	m/range                     compact range hashes, 32 bytes each, to resume appending
//	m/cp                        latest signed checkpoint (note text)
//	m/ret                       retention cut: the oldest bucket kept, 8 bytes
//	m/bucket                    bucket width in seconds, fixed when the store is created
//	m/layout                    layoutVersion, 8 bytes: Open refuses any other layout
//
// The log is kept per commit, not a key per leaf and node, for Badger's
// cost per key. Node (level, i) covers leaves [i<<level, (i+1)<<level)
// and is created by appending its last leaf, so its segment is the one
// whose key is the greatest at or before m/t/<that leaf>: a reverse seek.
// At level l a segment holds (first+n)>>l - first>>l nodes, so where a
// node sits in it follows from first and n alone.

import (
	"encoding/binary"
)

const (
	idLen  = 26
	rawLen = 16 // a ULID's raw bytes, as postings hold them
	// layoutVersion is the key layout above. Bump it with any change a
	// store written before could not be read with.
	layoutVersion = 3
	// leafIdxLen is the leaf index in front of a record's encoding.
	leafIdxLen = 8
)

// Index field names, as they appear in x/ keys.
const (
	fieldNamespace = "ns"
	fieldWorkload  = "wl"
	fieldModel     = "model"
	fieldFinding   = "finding"
	fieldAction    = "action"
	fieldAgent     = "agent"
)

var (
	keyTreeSize  = []byte("m/size")
	keyRange     = []byte("m/range")
	keyCP        = []byte("m/cp")
	keyRetention = []byte("m/ret")
	keyBucket    = []byte("m/bucket")
	keyLayout    = []byte("m/layout")

	prefixBuckets = []byte("b/")
	prefixSeqs    = []byte("s/")
	prefixIssues  = []byte("k/")
)

// bucketPrefix returns b/<bucket>/.
func bucketPrefix(bucket uint64) []byte {
	k := make([]byte, 0, 11)
	k = append(k, 'b', '/')
	k = binary.BigEndian.AppendUint64(k, bucket)
	return append(k, '/')
}

// bucketTablePrefix returns b/<bucket>/<table>/.
func bucketTablePrefix(bucket uint64, table byte) []byte {
	k := make([]byte, 0, 13+idLen)
	k = append(k, 'b', '/')
	k = binary.BigEndian.AppendUint64(k, bucket)
	return append(k, '/', table, '/')
}

func recordKey(bucket uint64, id string) []byte {
	return append(bucketTablePrefix(bucket, 'r'), id...)
}

// indexPrefix returns b/<bucket>/x/<field>\x00<value>\x00.
func indexPrefix(bucket uint64, field, value string) []byte {
	k := make([]byte, 0, 13+len(field)+len(value)+2+2*rawLen)
	k = append(k, bucketTablePrefix(bucket, 'x')...)
	k = append(k, field...)
	k = append(k, 0)
	k = append(k, value...)
	return append(k, 0)
}

// postingKey returns the key of a posting under prefix holding IDs from
// lo to hi.
func postingKey(prefix []byte, hi, lo []byte) []byte {
	k := make([]byte, 0, len(prefix)+2*rawLen)
	return append(append(append(k, prefix...), hi...), lo...)
}

// bucketOf returns the bucket in a b/ key.
func bucketOf(key []byte) (uint64, bool) {
	if len(key) < 11 || key[0] != 'b' || key[1] != '/' {
		return 0, false
	}
	return binary.BigEndian.Uint64(key[2:10]), true
}

func headKey(agent string) []byte {
	return append([]byte("c/"), agent...)
}

// agentSeqPrefix returns <table>/<agent>\x00.
func agentPrefix(table byte, agent string) []byte {
	k := make([]byte, 0, 2+len(agent)+1+8+1+idLen)
	k = append(k, table, '/')
	k = append(k, agent...)
	return append(k, 0)
}

func seqKey(agent string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(agentPrefix('s', agent), seq)
}

func issueKey(agent string, seq uint64, id string) []byte {
	k := binary.BigEndian.AppendUint64(agentPrefix('k', agent), seq)
	k = append(k, 0)
	return append(k, id...)
}

// parseAgentSeq splits an s/ key into agent and seq.
func parseSeqKey(key []byte) (agent string, seq uint64, ok bool) {
	if len(key) < 2+1+8 {
		return "", 0, false
	}
	body := key[2:]
	agent = string(body[:len(body)-9])
	if body[len(body)-9] != 0 {
		return "", 0, false
	}
	return agent, binary.BigEndian.Uint64(body[len(body)-8:]), true
}

func u64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, v)
}
