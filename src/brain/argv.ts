/**
 * Splits a command line into argv the way a POSIX shell would for plain words: whitespace separates,
 * single quotes keep everything literally, double quotes keep whitespace and honour `\"` and `\\`,
 * a backslash outside quotes escapes the next character. No variables, globs or operators: the
 * brain is spawned without a shell.
 */
export function splitCommandLine(line: string): string[] {
  const words: string[] = []
  let word = ''
  let inWord = false
  let quote: "'" | '"' | undefined
  for (let i = 0; i < line.length; i++) {
    const ch = line[i] as string
    if (quote === "'") {
      if (ch === "'") quote = undefined
      else word += ch
    } else if (quote === '"') {
      if (ch === '"') quote = undefined
      else if (ch === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\')) word += line[++i]
      else word += ch
    } else if (ch === "'" || ch === '"') {
      quote = ch
      inWord = true
    } else if (ch === '\\') {
      if (i + 1 >= line.length) throw new TypeError('ends with a lone backslash')
      word += line[++i]
      inWord = true
    } else if (/\s/u.test(ch)) {
      if (inWord) words.push(word)
      word = ''
      inWord = false
    } else {
      word += ch
      inWord = true
    }
  }
  if (quote) throw new TypeError(`has an unclosed ${quote === '"' ? 'double' : 'single'} quote`)
  if (inWord) words.push(word)
  return words
}
