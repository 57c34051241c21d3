"""An OpenAI-compatible chat completions server with image input (OpenAI, Ollama, vLLM, LM Studio...):
``POST {base}/chat/completions`` with the photo as a ``data:image/png;base64`` image_url part and
``response_format: {"type": "json_object"}``. tests/vision_server.py speaks the protocol for the tests."""

from __future__ import annotations

import base64
from typing import Any, Final

from studiolo.domain.understanding.http import ProviderDescriber, obj, post_json
from studiolo.domain.understanding.ports import DescriberInvalidReply, DescriberReply, Photo, refused, unavailable
from studiolo.domain.understanding.prompts import system_prompt
from studiolo.domain.understanding.validate import parse_reply

DEFAULT_MODEL: Final = "gpt-4o-mini"


def _usage(body: dict[str, Any]) -> tuple[int | None, int | None, float | None]:
    usage = obj(body.get("usage"))
    ints = [usage.get(k) if isinstance(usage.get(k), int) else None for k in ("prompt_tokens", "completion_tokens")]
    cost = usage.get("cost")  # OpenRouter and some gateways report the charge in USD
    return ints[0], ints[1], float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None


class OpenAIVisionDescriber(ProviderDescriber):
    name = "openai"
    default_model = DEFAULT_MODEL

    def describe(self, photo: Photo, template: str, instruction: str) -> DescriberReply:
        data_uri = "data:image/png;base64," + base64.b64encode(photo.png).decode("ascii")
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system_prompt(template, instruction)},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this photo as the JSON object asked for."},
                        {"type": "image_url", "image_url": {"url": data_uri}},
                    ],
                },
            ],
            "response_format": {"type": "json_object"},
            "temperature": 0.2,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        answer = post_json(
            f"{self.base_url}/chat/completions",
            body,
            headers=headers,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
        )
        reply = obj(answer.body)
        if answer.status != 200:
            error = obj(reply.get("error"))
            message = str(error.get("message") or answer.text[:300])
            if error.get("code") == "content_policy_violation":
                raise refused(message)
            raise unavailable(f"HTTP {answer.status}: {message}", answer.attempts)
        try:
            message_obj = reply["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise DescriberInvalidReply(
                "The provider's answer is not a chat completion.", details={"answer": answer.text[:300]}
            ) from None
        if isinstance(message_obj.get("refusal"), str) and message_obj["refusal"].strip():
            raise refused(message_obj["refusal"])  # OpenAI's structured refusal field
        content = message_obj.get("content")
        if isinstance(content, list):  # some servers answer content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise DescriberInvalidReply("The chat completion has no text.", details={"answer": answer.text[:300]})
        prompt_tokens, completion_tokens, cost = _usage(reply)
        return DescriberReply(
            data=parse_reply(content),
            model=str(reply.get("model") or self.model),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            attempts=answer.attempts,
            extra={"cost": cost} if cost is not None else {},
        )
