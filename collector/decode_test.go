package collector

import (
	"bytes"
	"strings"
	"testing"

	"github.com/promptrail/promptrail/audit"
)

func TestDecodeBatch(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		records  int
		rejected []int
		wantErr  string
	}{
		{"records", `{"records":[{"id":"a"},{"id":"b"}]}`, 2, nil, ""},
		{"unknown members skipped", `{"v":{"x":[1]},"records":[{"id":"a"}],"w":2}`, 1, nil, ""},
		{"a record that is not one", `{"records":[{"id":"a"},{"id":"b","start":"noon"},{"seq":"one"}]}`, 1, []int{1, 2}, ""},
		{"no records member", `{}`, 0, nil, ""},
		{"records twice", `{"records":[],"records":[]}`, 0, nil, "twice"},
		{"records not a list", `{"records":{}}`, 0, nil, "want"},
		{"truncated", `{"records":[{"id":"a"}`, 0, nil, "EOF"},
		{"syntax error in a record", `{"records":[{"id":}]}`, 0, nil, "invalid"},
		{"trailing data", `{"records":[]} {}`, 0, nil, "after the batch"},
		{"too many", `{"records":[` + strings.Repeat(`{},`, audit.MaxBatchRecords) + `{}]}`, 0, nil, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, rej, err := decodeBatch(strings.NewReader(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != tt.records || len(rej) != len(tt.rejected) {
				t.Fatalf("%d records and %d rejections, want %d and %d", len(recs), len(rej), tt.records, len(tt.rejected))
			}
			for i, want := range tt.rejected {
				if rej[i].Index != want || rej[i].Code != "invalid_record" || rej[i].Reason == "" {
					t.Errorf("rejection %d = %+v, want index %d, invalid_record, a reason", i, rej[i], want)
				}
			}
		})
	}
}

// FuzzDecodeBatch: any body decodes to records and rejections whose
// indexes are distinct and in order, or fails; never a panic.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"records":[{"id":"01M8GMX08Z9B1YMDKMTBD7G55A","seq":1}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		recs, rej, err := decodeBatch(bytes.NewReader(body))
		if err != nil {
			return
		}
		seen := map[int]bool{}
		for _, r := range recs {
			seen[r.index] = true
		}
		for _, r := range rej {
			if seen[r.Index] {
				t.Fatalf("index %d both decoded and rejected", r.Index)
			}
			seen[r.Index] = true
		}
		for i := range len(seen) {
			if !seen[i] {
				t.Fatalf("index %d missing of %d", i, len(seen))
			}
		}
	})
}
