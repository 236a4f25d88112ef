package archive

// ChangeKind says how a path differs between a layer and its parent.
type ChangeKind uint8

const (
	ChangeModify ChangeKind = iota // exists in both, content or metadata differ
	ChangeAdd                      // only in the layer
	ChangeDelete                   // only in the parent (a whiteout in the layer tar)
)

func (k ChangeKind) String() string {
	switch k {
	case ChangeModify:
		return "C"
	case ChangeAdd:
		return "A"
	case ChangeDelete:
		return "D"
	}
	return "?"
}

// Change is one path that differs between a layer and its parent. Path is
// slash-separated and rooted ("/etc/passwd").
type Change struct {
	Path string
	Kind ChangeKind
}

func (c Change) String() string { return c.Kind.String() + " " + c.Path }
