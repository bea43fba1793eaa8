"""Body bytes -> a validated PredictRequest, in one pass of pydantic's JSON parser.

The limits that depend on settings (HYDRAREC_MAX_CANDIDATES) are checked here too, so every
refusal of a body comes out of one place with the field it concerns.
"""

from __future__ import annotations

from pydantic import ValidationError

from service.errors import InvalidInput
from service.schemas import PredictRequest


def decode_request(body: bytes, max_candidates: int, max_exclude: int) -> PredictRequest:
    """Parse and validate a /predict body.

    Raises:
        InvalidInput: naming every field that is wrong (invalid JSON: the field `body`, with
            the line and column).
    """
    try:
        request = PredictRequest.model_validate_json(body)
    except ValidationError as e:
        raise InvalidInput.from_pydantic(e.errors(include_url=False, include_input=False)) from None
    return checked(request, max_candidates, max_exclude)


def checked(request: PredictRequest, max_candidates: int, max_exclude: int) -> PredictRequest:
    """The request, if it keeps the limits that the settings set.

    Raises:
        InvalidInput: naming the field over its limit.
    """
    if request.candidates is not None and len(request.candidates) > max_candidates:
        raise InvalidInput.at(
            "candidates",
            f"at most {max_candidates} ids per request (HYDRAREC_MAX_CANDIDATES), "
            f"got {len(request.candidates)}",
        )
    if request.exclude and request.candidates is not None:
        raise InvalidInput.at(
            "exclude",
            "applies to recommend mode (a request without candidates); leave the excluded ids "
            "out of the candidates instead",
        )
    if len(request.exclude) > max_exclude:
        raise InvalidInput.at(
            "exclude",
            f"at most {max_exclude} ids per request (HYDRAREC_MAX_EXCLUDE), "
            f"got {len(request.exclude)}",
        )
    return request
