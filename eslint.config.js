// `npm run lint` (with knip). TypeScript is checked with type information from the tsconfig nearest
// each file (src: tsconfig.json, tests: test/tsconfig.json, benchmarks: bench/tsconfig.json);
// the JavaScript programs (brains, scripts, fixtures) with the plain recommended rules.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

// Node's globals, for the JavaScript programs (TypeScript knows them from @types/node).
const nodeGlobals = Object.fromEntries(
  ['process', 'console', 'Buffer', 'URL', 'fetch', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'AbortController'].map((name) => [name, 'readonly']),
)

// The browser's globals, for the chat page (chat-page/*.js).
const browserGlobals = Object.fromEntries(
  ['document', 'window', 'requestAnimationFrame', 'URLSearchParams', 'EventSource', 'DOMParser', 'Node', 'fetch', 'setInterval'].map((name) => [
    name,
    'readonly',
  ]),
)

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'coverage/', '.tap/', 'node_modules/'] },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      // tap queues subtests itself: the promise t.test() returns needs no await.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafePromises: [{ from: 'package', name: 'PromiseWithSubtest', package: '@tapjs/core' }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      // `const { dropped, ...kept } = value` names what it leaves out.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', 'scripts/soak', 'scripts/brains/claude', 'scripts/brains/echo', 'test/fixtures/fake-claude/claude'],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: 'module', globals: nodeGlobals },
  },
  {
    files: ['chat-page/**/*.js'],
    languageOptions: { globals: browserGlobals },
  },
)
