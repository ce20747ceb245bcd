package openai

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
)

// Field is a form field of a multipart body.
type Field struct {
	Name      string `json:"name"`
	Value     string `json:"value"`               // at most maxText bytes of it
	Truncated bool   `json:"truncated,omitempty"` // the value was longer
}

// File is a file part of a multipart body; its content is never kept.
type File struct {
	Field       string `json:"field"`
	Filename    string `json:"filename"` // as sent: path elements are not removed
	ContentType string `json:"content_type,omitempty"`
	Size        int    `json:"size"` // bytes of content
}

// Multipart is what a record keeps of a multipart/form-data body, as sent
// to /v1/files, /v1/uploads/{id}/parts or /v1/audio/transcriptions.
type Multipart struct {
	Fields []Field `json:"fields,omitempty"`
	Files  []File  `json:"files,omitempty"`
}

// ParseMultipart reads the fields and files of a multipart/form-data body
// (RFC 7578). Field values are kept up to maxText bytes (cut on a UTF-8
// boundary); file contents are only counted. A part is a file when its
// Content-Disposition has a filename parameter. A malformed or truncated
// body yields the parts before the fault and an error wrapping
// ErrMultipart; a file cut short is listed with the bytes that came.
func ParseMultipart(contentType string, body []byte, maxText int) (Multipart, error) {
	var mp Multipart
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return mp, fmt.Errorf("openai: multipart: content type %q: %w: %w", contentType, ErrMultipart, err)
	}
	boundary := params["boundary"]
	if mt != "multipart/form-data" && mt != "multipart/mixed" || boundary == "" {
		return mp, fmt.Errorf("openai: multipart: content type %q has no boundary: %w", contentType, ErrMultipart)
	}
	maxText = max(maxText, 0)
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		part, err := r.NextRawPart() // raw: sizes as sent, no decoding
		if errors.Is(err, io.EOF) {
			if len(mp.Fields)+len(mp.Files) == 0 && len(bytes.TrimSpace(body)) > 0 {
				return mp, fmt.Errorf("openai: multipart: no part with boundary %q: %w", boundary, ErrMultipart)
			}
			return mp, nil
		}
		if err != nil {
			return mp, fmt.Errorf("openai: multipart: %w: %w", ErrMultipart, err)
		}
		name, filename, isFile := disposition(part.Header.Get("Content-Disposition"))
		if isFile {
			n, err := io.Copy(io.Discard, part)
			mp.Files = append(mp.Files, File{Field: name, Filename: filename,
				ContentType: part.Header.Get("Content-Type"), Size: int(n)})
			if err != nil {
				return mp, fmt.Errorf("openai: multipart: file %q: %w: %w", filename, ErrMultipart, err)
			}
			continue
		}
		buf := make([]byte, 0, min(maxText, 512))
		buf, err = readUpTo(part, buf, maxText)
		rest, err2 := io.Copy(io.Discard, part)
		f := Field{Name: name, Value: string(buf), Truncated: rest > 0}
		if f.Truncated {
			f.Value = string(buf[:validPrefix(buf)])
		}
		mp.Fields = append(mp.Fields, f)
		if err = errors.Join(err, err2); err != nil {
			return mp, fmt.Errorf("openai: multipart: field %q: %w: %w", name, ErrMultipart, err)
		}
	}
}

// disposition reads a part's Content-Disposition: its field name, its
// filename and whether it has one.
func disposition(v string) (name, filename string, isFile bool) {
	_, params, err := mime.ParseMediaType(v)
	if err != nil {
		return "", "", false
	}
	filename, isFile = params["filename"]
	return params["name"], filename, isFile
}

// readUpTo appends at most n bytes of r to buf.
func readUpTo(r io.Reader, buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		k, err := r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+k]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// validPrefix returns the length of b without a UTF-8 sequence cut at its
// end.
func validPrefix(b []byte) int {
	return backOffRune(b, 0, len(b))
}
