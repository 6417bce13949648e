import { Api } from 'grammy'
import type { TelegramSettings } from '../config.js'
import { describeTelegramFailure } from '../telegram/failures.js'
import { CommandFailed } from './failure.js'

export { describeTelegramFailure, isBadToken } from '../telegram/failures.js'

// A person is waiting at the terminal: grammY's default (500 s) would look like a hang.
const REQUEST_TIMEOUT_S = 20

/** A grammY client for the one-shot commands: TELEGRAM_API_ROOT, no retries, a short timeout. */
export function commandApi(settings: TelegramSettings): Api {
  return new Api(settings.botToken, { apiRoot: settings.apiRoot, timeoutSeconds: REQUEST_TIMEOUT_S })
}

/** Runs one Bot API call; any failure becomes a one-line {@link CommandFailed} that says what to do. */
export async function callTelegram<T>(settings: TelegramSettings, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    throw new CommandFailed(describeTelegramFailure(error, settings))
  }
}
