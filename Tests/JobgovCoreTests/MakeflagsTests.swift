import Testing
import JobgovCore

@Suite("Makeflags.merge")
struct MakeflagsTests {
    private let tail = " -j4 --jobserver-auth=fifo:/x"

    private func merge(_ existing: String?) -> String {
        Makeflags.merge(existing: existing, jobs: 4, auth: "fifo:/x")
    }

    @Test func noExistingFlagsStartsWithASpace() {
        #expect(merge(nil) == " -j4 --jobserver-auth=fifo:/x")
        #expect(merge("") == " -j4 --jobserver-auth=fifo:/x")
        #expect(merge("   ") == " -j4 --jobserver-auth=fifo:/x")
    }

    @Test func pipeAuthAndJobs() {
        #expect(Makeflags.merge(existing: nil, jobs: 12, auth: "3,4") == " -j12 --jobserver-auth=3,4")
    }

    @Test func keepsTheSingleLetterFirstWord() {
        #expect(merge("k") == "k" + tail)
        #expect(merge("ks") == "ks" + tail)
        #expect(merge("k -Iinclude") == "k -Iinclude" + tail)
    }

    @Test func dashedUserFlagsKeepALeadingSpace() {
        #expect(merge("--no-print-directory") == " --no-print-directory" + tail)
        #expect(merge(" -Iinc -Otarget") == " -Iinc -Otarget" + tail)
    }

    @Test func dropsOldJobserverAndJobsWords() {
        #expect(merge(" -j8 --jobserver-auth=3,4") == tail)
        #expect(merge("k -j8 --jobserver-auth=3,4") == "k" + tail)
        #expect(merge(" --jobserver-fds=5,6 -j") == tail)
        #expect(merge("k -j --jobs=9 --jobserver-auth=fifo:/old/GMfifo1 -l2") == "k -l2" + tail)
        #expect(!merge(" --jobserver-auth=7,8").contains("7,8"))
    }

    @Test func onlyOneAuthOptionRemains() {
        let merged = merge("k --jobserver-auth=3,4 --jobserver-auth=fifo:/stale")
        let auths = merged.split(separator: " ").filter { $0.hasPrefix("--jobserver-auth=") }
        #expect(auths == ["--jobserver-auth=fifo:/x"])
    }

    @Test func keepsVariableTailAtTheEnd() {
        #expect(merge(" -- VAR=v") == tail + " -- VAR=v")
        #expect(merge("k -j2 --jobserver-auth=3,4 -- CC=gcc X=1") == "k" + tail + " -- CC=gcc X=1")
        // A "-j8" among the variables belongs to a value and stays.
        #expect(merge("k -- FLAGS=-j8") == "k" + tail + " -- FLAGS=-j8")
    }

    @Test func stripsJFromTheCompactFirstWord() {
        #expect(merge("kj") == "k" + tail)
        #expect(merge("jks --jobserver-auth=3,4") == "ks" + tail)
        // A first word that was only "j" leaves nothing of the user's: the result starts with a space again.
        #expect(merge("j --jobserver-auth=3,4") == tail)
    }

    @Test func firstWordNeverContainsNUnlessTheUserHadIt() {
        for existing in [nil, "", "k", " -j8", "--", " -- A=1"] as [String?] {
            let first = merge(existing).split(separator: " ", omittingEmptySubsequences: false).first ?? ""
            #expect(!first.contains("n"), "MAKEFLAGS from \(String(describing: existing))")
            #expect(!first.contains("j"), "MAKEFLAGS from \(String(describing: existing))")
        }
    }

    /// make reads a word with `=` in it as a variable assignment, not as single-letter flags
    /// (checked with make 4.3: `MAKEFLAGS="proj=x" make` sets `proj`), so it must not lose its `j`s. It goes into
    /// the ` -- ` tail, where make itself puts variables (make 4.3 and 4.4.1 rewrite "proj=x -j4" that way).
    @Test func variableAssignmentsMoveToTheTail() {
        #expect(merge("proj=x") == tail + " -- proj=x")
        #expect(merge("CC=gcc -k") == " -k" + tail + " -- CC=gcc")
        #expect(merge("k CC=gcc -- A=1") == "k" + tail + " -- CC=gcc A=1")
    }

    @Test func auth() {
        #expect(Makeflags.auth(style: .fifo, fifoPath: "/run/jobgov-1-abcdef/fifo", readFD: 3, writeFD: 4)
            == "fifo:/run/jobgov-1-abcdef/fifo")
        #expect(Makeflags.auth(style: .pipe, fifoPath: "/run/x/fifo", readFD: 5, writeFD: 6) == "5,6")
    }
}
