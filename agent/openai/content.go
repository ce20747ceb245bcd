package openai

import (
	"strings"
	"unicode/utf8"
)

// maxURLShown bounds an image or file URL written into a message's text.
const maxURLShown = 2048

// content is a message's content as text. The API accepts a string or an
// array of content parts (OpenAI API reference: chat "messages[].content",
// Responses "input[].content" and "function_call_output.output"); parts
// become text: text parts their text, images "[image]" or "[image: URL]",
// audio "[audio]", files "[file: NAME]". Refusal parts are kept apart.
// Base64 data (data: URLs, input_audio.data, file_data) is never decoded:
// no field receives it.
type content struct {
	text    string
	refusal string
}

// UnmarshalJSON implements json.Unmarshaler; it never fails, so a part it
// does not know costs only that part. It walks the parts itself rather than
// through encoding/json, so that a large inline image is scanned once more,
// not several times.
func (c *content) UnmarshalJSON(b []byte) error {
	*c = content{}
	switch b[0] {
	case '"':
		c.text, _ = unquote(b)
	case '[':
		var parts []contentPart
		eachElement(b, func(v []byte) {
			if v[0] == '{' {
				parts = append(parts, decodePart(v))
			}
		})
		c.setParts(parts)
	case '{':
		c.setParts([]contentPart{decodePart(b)})
	}
	return nil
}

// decodePart decodes a content part as encoding/json would decode
// contentPart, except that a value of the wrong type is left empty.
func decodePart(b []byte) contentPart {
	var p contentPart
	eachMember(b, func(k, v []byte) {
		switch string(k) {
		case "type":
			p.Type = stringValue(v)
		case "text":
			p.Text = stringValue(v)
		case "refusal":
			p.Refusal = stringValue(v)
		case "file_id":
			p.FileID = stringValue(v)
		case "filename":
			p.Filename = stringValue(v)
		case "image_url":
			_ = p.ImageURL.UnmarshalJSON(v)
		case "file_url":
			_ = p.FileURL.UnmarshalJSON(v)
		case "file":
			eachMember(v, func(k, v []byte) {
				switch string(k) {
				case "file_id":
					p.File.FileID = stringValue(v)
				case "filename":
					p.File.Filename = stringValue(v)
				}
			})
		case "input_audio":
			eachMember(v, func(k, v []byte) {
				if string(k) == "format" {
					p.InputAudio.Format = stringValue(v)
				}
			})
		}
	})
	return p
}

func (c *content) setParts(parts []contentPart) {
	var text, refusal strings.Builder
	for i := range parts {
		p := &parts[i]
		if p.Type == "refusal" {
			joinTo(&refusal, p.Refusal)
			continue
		}
		joinTo(&text, p.render())
	}
	c.text, c.refusal = text.String(), refusal.String()
}

// joinTo appends s to b, after a newline when b already holds text.
func joinTo(b *strings.Builder, s string) {
	if s == "" {
		return
	}
	if b.Len() > 0 {
		b.WriteByte('\n')
	}
	b.WriteString(s)
}

// contentPart is one content part, of any of the API's kinds.
type contentPart struct {
	Type     string   `json:"type"`
	Text     string   `json:"text"`
	Refusal  string   `json:"refusal"`
	ImageURL imageRef `json:"image_url"` // chat: {"url": ...}; Responses: a string
	FileID   string   `json:"file_id"`   // Responses input_image / input_file
	Filename string   `json:"filename"`  // Responses input_file
	FileURL  urlRef   `json:"file_url"`  // Responses input_file
	File     struct { // chat "file" part; file_data is not decoded
		FileID   string `json:"file_id"`
		Filename string `json:"filename"`
	} `json:"file"`
	InputAudio struct { // chat "input_audio" part; data is not decoded
		Format string `json:"format"`
	} `json:"input_audio"`
}

// render writes a part as text.
func (p *contentPart) render() string {
	switch p.Type {
	case "image_url", "input_image", "image":
		switch {
		case p.ImageURL.url != "":
			return "[image: " + p.ImageURL.url + "]"
		case p.FileID != "":
			return "[image: " + p.FileID + "]"
		}
		return "[image]"
	case "input_audio", "audio":
		if p.InputAudio.Format != "" {
			return "[audio: " + p.InputAudio.Format + "]"
		}
		return "[audio]"
	case "file", "input_file":
		for _, name := range []string{p.File.Filename, p.Filename, p.File.FileID, p.FileID, p.FileURL.url} {
			if name != "" {
				return "[file: " + name + "]"
			}
		}
		return "[file]"
	}
	if p.Text != "" || p.Type == "" || strings.HasSuffix(p.Type, "text") {
		return p.Text
	}
	return "[" + p.Type + "]"
}

// imageRef is an image URL given as a string or as {"url": ...}.
type imageRef struct{ urlRef }

// UnmarshalJSON implements json.Unmarshaler.
func (r *imageRef) UnmarshalJSON(b []byte) error {
	r.url = ""
	if b[0] == '{' {
		eachMember(b, func(k, v []byte) {
			if string(k) == "url" {
				_ = r.urlRef.UnmarshalJSON(v)
			}
		})
		return nil
	}
	return r.urlRef.UnmarshalJSON(b)
}

// urlRef is a URL worth showing: a data: URL (inline base64) is dropped
// without being decoded or copied, a long URL is shortened.
type urlRef struct{ url string }

// UnmarshalJSON implements json.Unmarshaler.
func (r *urlRef) UnmarshalJSON(b []byte) error {
	r.url = ""
	if b[0] != '"' || hasPrefixFold(b[1:], "data:") {
		return nil
	}
	if len(b) > 4*maxURLShown { // shorten before decoding, not after
		b = b[:4*maxURLShown]
		for len(b) > 1 && b[len(b)-1] == '\\' { // never end inside an escape
			b = b[:len(b)-1]
		}
		b = append(b[:len(b):len(b)], '"')
	}
	s, _ := unquote(b)
	r.url = truncText(s, maxURLShown)
	return nil
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(string(b[:len(prefix)]), prefix)
}

// truncText cuts s to at most n bytes on a rune boundary, marking the cut.
func truncText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
