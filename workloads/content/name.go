package content

import (
	"mime"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameBytes bounds an attachment's file name, in bytes.
const MaxNameBytes = 255

// extensions are the file name extensions (lower case, without the dot) that fit a media
// type, the usual one first. The table is the project's own rather than the system's
// mime.types, so that a name comes out the same on every machine. A type that is not here
// keeps the sender's name as it is.
var extensions = map[string][]string{
	"application/pdf":    {"pdf"},
	"application/json":   {"json"},
	"application/xml":    {"xml"},
	"application/zip":    {"zip"},
	"application/rtf":    {"rtf"},
	"application/dicom":  {"dcm", "dicom"},
	"application/msword": {"doc", "dot"},
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document": {"docx"},
	// Outlook sends CSV files as Excel.
	"application/vnd.ms-excel": {"xls", "csv"},
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         {"xlsx"},
	"application/vnd.ms-powerpoint":                                             {"ppt"},
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": {"pptx"},
	"application/vnd.oasis.opendocument.text":                                   {"odt"},
	"application/vnd.oasis.opendocument.spreadsheet":                            {"ods"},
	"image/png":       {"png"},
	"image/jpeg":      {"jpg", "jpeg", "jpe", "jfif"},
	"image/gif":       {"gif"},
	"image/webp":      {"webp"},
	"image/heic":      {"heic"},
	"image/heif":      {"heif"},
	"image/tiff":      {"tif", "tiff"},
	"image/bmp":       {"bmp"},
	"image/svg+xml":   {"svg"},
	"text/plain":      {"txt", "text", "log", "csv", "tsv", "md"},
	"text/csv":        {"csv"},
	"text/html":       {"html", "htm"},
	"text/calendar":   {"ics"},
	"text/vcard":      {"vcf"},
	"text/rtf":        {"rtf"},
	"audio/mpeg":      {"mp3"},
	"audio/mp4":       {"m4a"},
	"audio/wav":       {"wav"},
	"video/mp4":       {"mp4", "m4v"},
	"video/quicktime": {"mov"},
	"message/rfc822":  {"eml"},
}

// Extension is the usual file name extension of mediaType (which may carry parameters), with
// its dot, e.g. ".pdf"; "" for a type the project does not know.
func Extension(mediaType string) string {
	if exts := extensionsOf(mediaType); len(exts) > 0 {
		return "." + exts[0]
	}
	return ""
}

func extensionsOf(mediaType string) []string {
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return nil
	}
	return extensions[mt]
}

// SafeName makes a sender's file name a label that is safe to store and to offer for a file
// of mediaType: the last path element, valid UTF-8, without control characters or trailing
// dots and spaces, at most MaxNameBytes bytes. When the media type has known extensions and the
// name does not end with one of them, the usual one is added, so that the file opens as what
// it is served as: "passwd" sent as application/pdf becomes "passwd.pdf", and "scan.exe" sent
// as image/png becomes "scan.exe.png". Shortening keeps the extension. An empty name stays
// empty. SafeName of its own result changes nothing.
func SafeName(name, mediaType string) string {
	name = strings.ToValidUTF8(name, "")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	// Windows drops trailing dots and spaces, so "report." would lose the extension added below.
	name = strings.TrimRightFunc(strings.TrimSpace(name), func(r rune) bool { return r == '.' || unicode.IsSpace(r) })
	if name == "" {
		return ""
	}
	ext := ""
	if exts := extensionsOf(mediaType); len(exts) > 0 {
		have := ""
		if i := strings.LastIndexByte(name, '.'); i > 0 {
			have = strings.ToLower(name[i+1:])
		}
		if !slices.Contains(exts, have) {
			ext = "." + exts[0]
		}
	}
	if len(name)+len(ext) <= MaxNameBytes {
		return name + ext
	}
	// Too long: shorten the stem, keeping the name's own extension (when it fits the type) or
	// the added one.
	if ext == "" {
		if i := strings.LastIndexByte(name, '.'); i > 0 && len(name)-i <= 16 {
			name, ext = name[:i], name[i:]
		}
	}
	stem := strings.TrimRightFunc(truncate(name, MaxNameBytes-len(ext)), func(r rune) bool { return r == '.' || unicode.IsSpace(r) })
	if stem == "" {
		stem = "attachment" // a stem of only dots and spaces: ".pdf" alone would read as no extension
	}
	return stem + ext
}

// truncate cuts s to at most n bytes at a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
