using System.Text;

namespace Engine.Cli.Text;

/// <summary>
/// A UTF-8 text file read as a stream of pieces that can be tokenized one by one with the same ids as the whole text.
/// A piece ends just after a lone newline, one with a non-space character on either side: none of the encodings'
/// pre-tokenizers (GPT-2's, cl100k's, o200k's) puts that newline and the next character in one pre-token, and the
/// newline is a pre-token of its own whether or not text follows, so BPE never merges across the boundary. (After a
/// longer run of white space it is not: GPT-2's <c>\s+(?!\S)</c> takes " \n" whole at the end of a piece but " " and
/// "\n" apart before a letter.) A text with no such newline for <see cref="MaxChars"/> characters is cut between an
/// ASCII letter and a space followed by a letter (also a pre-token boundary in all three), and failing that at the
/// limit itself (<see cref="ForcedCuts"/> counts those; only there may ids differ from encoding the whole text).
/// </summary>
sealed class TextChunks(string path, int targetChars = 1 << 20)
{
    /// <summary>The longest piece before a cut is forced.</summary>
    public int MaxChars => targetChars * 4;

    /// <summary>Pieces cut at the length limit, where no safe boundary was found.</summary>
    public int ForcedCuts { get; private set; }

    /// <summary>Bytes of the file read so far (for a progress bar).</summary>
    public long BytesRead { get; private set; }

    /// <summary>
    /// The pieces in order. The file must be UTF-8 without NUL bytes (a leading BOM is dropped); otherwise
    /// <see cref="InvalidDataException"/> names the file and the offset, as <c>engine train --text</c> does.
    /// </summary>
    public IEnumerable<string> Read()
    {
        FileStream fs;
        try { fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan); }
        catch (FileNotFoundException) { throw new UsageException($"--text {path}: file not found"); }
        catch (DirectoryNotFoundException) { throw new UsageException($"--text {path}: file not found"); }
        using (fs)
        {
            var decoder = new UTF8Encoding(false, throwOnInvalidBytes: true).GetDecoder();
            var bytes = new byte[1 << 16];
            var chars = new char[bytes.Length + 4];
            var pending = new StringBuilder();
            bool first = true;
            long offset = 0;
            while (true)
            {
                int n = fs.Read(bytes, 0, bytes.Length);
                int nul = Array.IndexOf(bytes, (byte)0, 0, n);
                if (nul >= 0) throw new InvalidDataException($"{path}: not a text file (a NUL byte at offset {offset + nul}; --text needs UTF-8 text)");
                int c;
                try { c = decoder.GetChars(bytes, 0, n, chars, 0, flush: n == 0); }
                catch (DecoderFallbackException e) { throw new InvalidDataException($"{path}: not a text file (invalid UTF-8 at offset {offset + Math.Max(0, e.Index)}; --text needs UTF-8 text)"); }
                offset += n;
                BytesRead = offset;
                int start = first && c > 0 && chars[0] == '\uFEFF' ? 1 : 0;
                if (c > 0) first = false;
                pending.Append(chars, start, c - start);
                while (pending.Length >= targetChars)
                {
                    int cut = Cut(pending);
                    if (cut <= 0) break;
                    var piece = pending.ToString(0, cut);
                    pending.Remove(0, cut);
                    yield return piece;
                }
                if (n == 0) break;
            }
            if (pending.Length > 0) yield return pending.ToString();
        }
    }

    /// <summary>Where to end the next piece: 0 to wait for more text.</summary>
    int Cut(StringBuilder s)
    {
        // The last safe newline at or after the target length would make pieces grow without bound on texts of short
        // lines; the first one after targetChars / 2 keeps them near the target.
        int limit = Math.Min(s.Length, MaxChars);
        for (int i = Math.Max(2, targetChars / 2); i < limit; i++)
            if (s[i - 1] == '\n' && !char.IsWhiteSpace(s[i]) && !char.IsWhiteSpace(s[i - 2])) return i;
        if (s.Length < MaxChars) return 0;
        for (int i = Math.Max(1, targetChars / 2); i + 1 < limit; i++)
            if (s[i] == ' ' && char.IsAsciiLetter(s[i - 1]) && char.IsAsciiLetter(s[i + 1])) return i;
        ForcedCuts++;
        int at = limit;
        if (char.IsHighSurrogate(s[at - 1])) at--; // never split a surrogate pair
        return at;
    }
}
