package openai

import (
	"errors"
	"strings"
	"testing"
)

const transcriptionBody = "--BOUNDARY\r\n" +
	"Content-Disposition: form-data; name=\"model\"\r\n\r\n" +
	"gpt-4o-transcribe\r\n" +
	"--BOUNDARY\r\n" +
	"Content-Disposition: form-data; name=\"prompt\"\r\n\r\n" +
	"Names: Zoë, Nguyễn, Jürgen. Please transcribe verbatim.\r\n" +
	"--BOUNDARY\r\n" +
	"Content-Disposition: form-data; name=\"file\"; filename=\"../meeting 2024-05-01.mp3\"\r\n" +
	"Content-Type: audio/mpeg\r\n\r\n" +
	"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64binary-audio-bytes\r\n" +
	"--BOUNDARY\r\n" +
	"Content-Disposition: form-data; name=\"response_format\"\r\n\r\n" +
	"verbose_json\r\n" +
	"--BOUNDARY--\r\n"

func TestParseMultipart(t *testing.T) {
	ct := "multipart/form-data; boundary=BOUNDARY"
	tests := []struct {
		name    string
		ct      string
		body    string
		maxText int
		want    Multipart
		is      error
	}{
		{"transcription", ct, transcriptionBody, 1000, Multipart{
			Fields: []Field{
				{Name: "model", Value: "gpt-4o-transcribe"},
				{Name: "prompt", Value: "Names: Zoë, Nguyễn, Jürgen. Please transcribe verbatim."},
				{Name: "response_format", Value: "verbose_json"},
			},
			Files: []File{{Field: "file", Filename: "../meeting 2024-05-01.mp3", ContentType: "audio/mpeg", Size: 32}},
		}, nil},
		{"values bounded on a rune boundary", ct, transcriptionBody, 10, Multipart{
			Fields: []Field{
				{Name: "model", Value: "gpt-4o-tra", Truncated: true},
				{Name: "prompt", Value: "Names: Zo", Truncated: true},
				{Name: "response_format", Value: "verbose_js", Truncated: true},
			},
			Files: []File{{Field: "file", Filename: "../meeting 2024-05-01.mp3", ContentType: "audio/mpeg", Size: 32}},
		}, nil},
		{"file upload", "multipart/form-data; boundary=\"b-1\"",
			"--b-1\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n" +
				"--b-1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"train.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n" +
				"{\"messages\":[]}\n{\"messages\":[]}\n\r\n--b-1--\r\n", 100,
			Multipart{Fields: []Field{{Name: "purpose", Value: "fine-tune"}},
				Files: []File{{Field: "file", Filename: "train.jsonl", ContentType: "application/jsonl", Size: 32}}}, nil},
		{"truncated in a file", ct, transcriptionBody[:strings.Index(transcriptionBody, "binary")], 1000, Multipart{
			Fields: []Field{
				{Name: "model", Value: "gpt-4o-transcribe"},
				{Name: "prompt", Value: "Names: Zoë, Nguyễn, Jürgen. Please transcribe verbatim."},
			},
			Files: []File{{Field: "file", Filename: "../meeting 2024-05-01.mp3", ContentType: "audio/mpeg", Size: 14}},
		}, ErrMultipart},
		{"no boundary", "multipart/form-data", transcriptionBody, 10, Multipart{}, ErrMultipart},
		{"bad content type", "multipart/form-data; boundary", transcriptionBody, 10, Multipart{}, ErrMultipart},
		{"not multipart", "application/json; boundary=x", "{}", 10, Multipart{}, ErrMultipart},
		{"garbage", ct, "hello", 10, Multipart{}, ErrMultipart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMultipart(tt.ct, []byte(tt.body), tt.maxText)
			if tt.is == nil && err != nil || tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v, want %v", err, tt.is)
			}
			sameJSON(t, "multipart", got, tt.want)
		})
	}
}
