"""Google Gemini: ``POST {base}/v1beta/models/{model}:generateContent`` with the photo as ``inline_data`` and
``responseMimeType: application/json``; the key in the ``x-goog-api-key`` header. A blocked prompt
(``promptFeedback.blockReason``) or a candidate stopped for SAFETY/PROHIBITED_CONTENT is a refusal."""

from __future__ import annotations

import base64
from typing import Any, Final

from studiolo.domain.understanding.http import ProviderDescriber, obj, post_json
from studiolo.domain.understanding.ports import DescriberInvalidReply, DescriberReply, Photo, refused, unavailable
from studiolo.domain.understanding.prompts import system_prompt
from studiolo.domain.understanding.validate import parse_reply

DEFAULT_MODEL: Final = "gemini-2.5-flash"
_REFUSED_REASONS: Final = ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY")


class GeminiDescriber(ProviderDescriber):
    name = "gemini"
    default_model = DEFAULT_MODEL

    def describe(self, photo: Photo, template: str, instruction: str) -> DescriberReply:
        body = {
            "systemInstruction": {"parts": [{"text": system_prompt(template, instruction)}]},
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(photo.png).decode()}},
                        {"text": "Describe this photo as the JSON object asked for."},
                    ],
                }
            ],
            "generationConfig": {"responseMimeType": "application/json", "temperature": 0.2},
        }
        answer = post_json(
            f"{self.base_url}/v1beta/models/{self.model}:generateContent",
            body,
            headers={"x-goog-api-key": self.api_key},
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
        )
        reply: dict[str, Any] = obj(answer.body)
        if answer.status != 200:
            error = obj(reply.get("error"))
            raise unavailable(f"HTTP {answer.status}: {error.get('message') or answer.text[:300]}", answer.attempts)
        feedback = obj(reply.get("promptFeedback"))
        if feedback.get("blockReason"):
            raise refused(f"blocked: {feedback['blockReason']}")
        candidates = reply.get("candidates")
        if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
            raise DescriberInvalidReply("The Gemini answer has no candidate.", details={"answer": answer.text[:300]})
        candidate = candidates[0]
        if candidate.get("finishReason") in _REFUSED_REASONS:
            raise refused(f"stopped: {candidate['finishReason']}")
        parts = obj(candidate.get("content")).get("parts") or []
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
        usage = obj(reply.get("usageMetadata"))
        prompt_tokens = usage.get("promptTokenCount")
        completion_tokens = usage.get("candidatesTokenCount")
        return DescriberReply(
            data=parse_reply(text),
            model=str(reply.get("modelVersion") or self.model),
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            completion_tokens=completion_tokens if isinstance(completion_tokens, int) else None,
            attempts=answer.attempts,
        )
