import t from 'tap'
import { MemoryInbox } from '../../../src/store/memory.js'
import { SqliteInbox } from '../../../src/store/sqlite.js'
import { inboxContract } from '../../helpers/inbox-contract.js'
import { tempDir } from '../../helpers/service.js'

void t.test('SqliteInbox', async (t) => {
  inboxContract(t, () => ({ inbox: new SqliteInbox(tempDir()), kind: 'sqlite', retries: true }))
})

void t.test('MemoryInbox', async (t) => {
  inboxContract(t, () => ({ inbox: new MemoryInbox(), kind: 'memory', retries: false }))
})
