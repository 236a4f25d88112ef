// Package conformance is the one test suite every strata backend passes,
// and so the written-down behaviour of a backend. A backend describes
// itself with a Backend (how to make a root, how to open the driver, what
// it cannot do as Caps data) and calls Run from a test and Bench from a
// benchmark; the suite never switches on a backend's name.
//
//	func TestMain(m *testing.M) { conformance.Main(m, backends) }
//	func TestMine(t *testing.T) { conformance.Run(t, myBackend()) }
//	func BenchmarkMine(b *testing.B) { conformance.Bench(b, myBackend()) }
//
// Main is needed only for the crash cases, which re-execute the test
// binary as a child that the suite kills with SIGKILL mid-operation.
//
// Each case runs in parallel on a fresh root and reports every difference
// at once, with the trees dumped, in the manner of fstest.TestFS. Choices
// the suite makes where the driver package leaves room:
//
//   - Views are compared with reference trees made by archive.Apply into a
//     plain directory: content, type, mode incl. setuid/setgid/sticky,
//     owner, xattrs (but Caps.IgnoreXattrs), symlink targets, device
//     numbers, hardlink groups and mtimes (to Caps.MtimePrecision). The
//     metadata of a view's root directory is not compared.
//   - Changes are what archive.Changes says between the parent's view and
//     the layer's: a directory whose only change is its mtime is not
//     listed; a deleted directory is one Delete; an opaque directory lists
//     each hidden lower entry as deleted. A native diff must give exactly
//     these, and a Diff that rebuilds the same tree as the naive one.
//   - A refused ApplyDiff (hostile or broken tar) leaves the paths under
//     the root as they were; the layer stays usable or its ID free. Tars
//     that are legal but odd (absolute names, paths through symlinks) may
//     be accepted, and then everything they add is inside the layer.
//   - After a kill, New recovers: a layer whose ApplyDiff was killed is
//     gone; one whose Create or Remove was killed is gone or whole; a
//     layer mounted by the dead process is unmounted, keeps what was
//     written through the mount and can be removed; and the paths under
//     the root are those before the crash (no staging debris).
//   - A size limit is enforced (writes past it fail with ENOSPC or EDQUOT,
//     and a layer-data limit does not count the parent) or Create with it
//     fails with ErrNotSupported and makes nothing.
package conformance
